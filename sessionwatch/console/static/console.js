// sessionwatch console: the live view's server-sent events, and a confirmation before any
// revocation by hand. No inline script anywhere (the Content-Security-Policy forbids it); every
// value from the server goes in as text, never as HTML.
"use strict";

function cell(row, text, href) {
  const td = document.createElement("td");
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

function addItem(tbody, item, role) {
  const empty = tbody.querySelector("tr.empty");
  if (empty) empty.remove();
  const row = document.createElement("tr");
  row.className = item.kind + " fresh";
  cell(row, (item.time || "").slice(0, 19).replace("T", " "));
  cell(row, item.kind, item.kind === "revocation" ? "/revocations/" + encodeURIComponent(item.id) : null);
  cell(row, item.tenant);
  cell(row, item.detector);
  const sev = cell(row, "");
  const span = document.createElement("span");
  span.className = "sev sev-" + item.severity;
  span.textContent = item.severity;
  sev.appendChild(span);
  cell(row, item.action);
  const tenant = encodeURIComponent(item.tenant);
  if (item.session) {
    const shown = role === "responder" ? item.session : item.session.slice(0, 8) + "…";
    cell(row, "session " + shown, "/sessions/" + tenant + "/" + encodeURIComponent(item.session_ref));
  } else if (item.user) {
    cell(row, "user " + item.user, "/users/" + tenant + "/" + encodeURIComponent(item.user));
  } else {
    cell(row, item.source ? "source " + item.source : "");
  }
  cell(row, item.summary);
  tbody.insertBefore(row, tbody.firstChild);
  while (tbody.rows.length > 500) tbody.deleteRow(-1);
}

function startLive() {
  const status = document.getElementById("live-status");
  const table = document.getElementById("live");
  if (!status || !table || !window.EventSource) return;
  const source = new EventSource(status.dataset.stream);
  const role = status.dataset.role;
  source.onopen = () => { status.textContent = "live"; status.className = "live-on"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "muted"; };
  source.addEventListener("item", (e) => addItem(table.tBodies[0], JSON.parse(e.data), role));
}

function guardForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => { startLive(); guardForms(); });
