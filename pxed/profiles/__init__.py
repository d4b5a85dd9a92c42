"""Profiles: what each machine boots, and its boot files rendered for it.

    select.py   which profile a machine gets (boot-once state > host > match > default)
    paths.py    the stable names rendered files are asked for, over TFTP and HTTP
    render.py   the templates (Jinja2) and the variables each machine's files get
    serve.py    the running server's view: a requested name -> rendered bytes, or None

Built-in templates are in pxed/data/templates/; a profile's ``templates`` replace them.
"""
