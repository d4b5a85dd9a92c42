// pxed's status page: draws /api/stream's snapshots (leases and boot stories) and redraws
// every second so that running transfers grow. Everything a client sent (hostnames, file
// names) is put in the page as text, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const ROW = 44, LABEL = 280, AXIS = 22, RECENT = 3600, NAME = 36;
const ARCH = {0: "BIOS", 6: "UEFI x86", 7: "UEFI x64", 9: "UEFI x64", 10: "UEFI arm32",
              11: "UEFI arm64", 16: "HTTP x64", 19: "HTTP arm64"};
let state = null, skew = 0;  // skew: the browser's clock minus pxed's

function el(name, attrs, text) {
  const node = name.startsWith("svg:") ? document.createElementNS(SVG, name.slice(4))
                                       : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function now() { return Date.now() / 1000 - skew; }

function span(seconds) {
  if (seconds < 10) return String(parseFloat(Math.max(0, seconds).toFixed(seconds < 1 ? 2 : 1))) + "s";
  const s = Math.round(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h";
}

function clock(epoch) {
  return new Date((epoch + skew) * 1000).toLocaleTimeString([], {hour12: false});
}

function segClass(step) {
  if (step.end === null) return "running";
  if (step.ok === false) return "failed";
  return step.kind === "dhcp" ? "dhcp" : step.kind;
}

function stepTitle(step) {
  const parts = [step.label];
  const d = step.detail || {};
  if (step.end !== null) parts.push(span(step.end - step.start));
  if (d.reason) parts.push(d.reason);
  return parts.filter(Boolean).join(" · ");
}

function drawChart(boots, t) {
  const chart = document.getElementById("chart");
  const recent = boots.filter(b => t - b.updated <= RECENT);
  const shown = recent.length ? recent : boots.slice(-20);
  const older = boots.length - shown.length;
  document.getElementById("boots-note").textContent =
    shown.length ? `${shown.length} machine(s)` + (older ? `, ${older} older not drawn (pxed boots)` : "") : "";
  chart.replaceChildren();
  if (!shown.length) { chart.append(el("p", {class: "empty"}, "No boots seen yet.")); return; }
  const width = Math.max(chart.clientWidth, 640);
  const plot = width - LABEL - 16;
  const start = Math.min(...shown.map(b => b.started));
  // Up to now while a machine is booting; else up to the last thing seen, so that a boot
  // that is over is not squeezed further to the left every second.
  const booting = shown.some(b => b.outcome === "booting");
  const end = booting ? t : Math.max(...shown.map(b => b.updated));
  const range = Math.max(end - start, 1) * 1.03;
  const x = v => LABEL + (v - start) / range * plot;
  const svg = el("svg:svg", {viewBox: `0 0 ${width} ${AXIS + shown.length * ROW}`,
                             height: AXIS + shown.length * ROW, role: "img",
                             "aria-label": "boot timeline"});
  const axis = el("svg:g", {class: "axis"});
  for (let i = 0; i <= 5; i++) {
    const v = start + range * i / 5, px = x(v);
    axis.append(el("svg:line", {x1: px, x2: px, y1: AXIS - 4, y2: AXIS + shown.length * ROW}));
    axis.append(el("svg:text", {x: px, y: 12, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle"},
                   i === 5 ? clock(v) : "+" + span(v - start)));
  }
  axis.append(el("svg:text", {x: 0, y: 12}, `from ${clock(start)}`));
  svg.append(axis);
  shown.forEach((boot, i) => {
    const y = AXIS + i * ROW;
    const row = el("svg:g", {class: "row", "data-mac": boot.mac, "data-outcome": boot.outcome,
                             "data-ip": boot.ip || ""});
    row.append(el("svg:rect", {class: "band", x: 0, y, width, height: ROW, fill: "transparent"}));
    const name = boot.hostname || boot.mac;
    row.append(el("svg:rect", {class: "outcome " + boot.outcome, x: 0, y: y + 4, width: 4,
                               height: ROW - 8}));
    row.append(el("svg:text", {x: 10, y: y + 17, class: "name"},
                  name.length > NAME ? name.slice(0, NAME - 1) + "…" : name));
    const sub = [boot.hostname ? boot.mac : null, boot.ip, ARCH[boot.arch]].filter(Boolean).join("  ");
    row.append(el("svg:text", {x: 10, y: y + 34, class: "sub", fill: "#777", "font-size": 11}, sub));
    // Under the segments: the outcome, and why it failed or the last thing seen.
    const words = boot.outcome === "failed" ? boot.reason || boot.last : boot.last;
    const said = el("svg:text", {x: LABEL, y: y + 38, class: "said"});
    said.append(el("svg:tspan", {class: "outcome " + boot.outcome, "font-weight": "bold"}, boot.outcome));
    said.append(el("svg:tspan", {class: boot.outcome === "failed" ? "reason" : "last", dx: 6},
                   words ? "— " + words : ""));
    row.append(said);
    for (const step of boot.steps) {
      const x0 = x(step.start), x1 = x(step.end === null ? t : step.end);
      const seg = el("svg:rect", {class: "seg " + segClass(step), x: x0, y: y + 5,
                                  width: Math.max(x1 - x0, step.kind === "dhcp" ? 4 : 3),
                                  height: 20, rx: 2, "data-kind": step.kind});
      seg.append(el("svg:title", {}, stepTitle(step)));
      row.append(seg);
      if (step.ok === false) {
        row.append(el("svg:text", {class: "mark", x: x1 + 3, y: y + 20}, "✕"));
      }
    }
    if (boot.outcome === "failed" && !boot.steps.some(s => s.ok === false)) {
      row.append(el("svg:text", {class: "mark", x: x(boot.updated) + 4, y: y + 20}, "✕"));
    }
    const tip = el("svg:title", {}, `${name} ${boot.hostname ? boot.mac : ""}: ${boot.last}`);
    row.firstChild.append(tip);
    svg.append(row);
  });
  chart.append(svg);
}

function drawLeases(leases, t) {
  const body = document.querySelector("#leases tbody");
  body.replaceChildren();
  for (const lease of leases) {
    const tr = el("tr", {"data-mac": lease.mac, "data-ip": lease.ip});
    const left = lease.expires_epoch - t;
    tr.append(el("td", {class: "mono"}, lease.ip), el("td", {class: "mono"}, lease.mac),
              el("td", {}, lease.hostname || ""), el("td", {}, lease.state),
              el("td", {}, left > 0 ? "in " + span(left) : span(-left) + " ago"),
              el("td", {}, lease.arch === null ? "" : ARCH[lease.arch] || lease.arch),
              el("td", {class: "mono"}, lease.boot_file || ""));
    body.append(tr);
  }
  document.getElementById("leases-note").textContent = `${leases.length} record(s)`;
}

function draw() {
  if (!state) return;
  const t = now();
  const failed = state.boots.filter(b => b.outcome === "failed").length;
  const booting = state.boots.filter(b => b.outcome === "booting").length;
  document.getElementById("summary").textContent =
    `${state.mode} mode · ${state.leases.length} lease record(s) · ${state.transfers} transfer(s) running` +
    (state.timeline ? ` · ${booting} booting, ${failed} failed` : " · boot timeline off") +
    ` · pxed ${state.version}`;
  drawChart(state.boots, t);
  drawLeases(state.leases, t);
}

function take(text) {
  state = JSON.parse(text);
  skew = Date.now() / 1000 - state.now;
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  draw();
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("api/stream");
  source.onopen = () => { live.textContent = "live"; live.className = "state live"; };
  source.onmessage = message => take(message.data);
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "state"; };
}

fetch("api/status").then(r => r.text()).then(take).catch(() => {});
connect();
setInterval(draw, 1000);
window.addEventListener("resize", draw);
