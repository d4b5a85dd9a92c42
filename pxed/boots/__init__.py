"""The boot timeline: each machine's boot as a story (story), made from the event stream
(timeline), told by `pxed boots` (report)."""
