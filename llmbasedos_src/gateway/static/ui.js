// The llmbasedos status page: reads /status and /ui/data with the page's token every few seconds.
// Everything is written with textContent: service descriptions, client names and audit reasons are data.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const meta = document.querySelector('meta[name="llmbasedos-token"]');
  const token = meta ? meta.getAttribute("content") : "";
  const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
  let timer = null;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function fill(tableId, rows, columns) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", "none", "empty");
      td.colSpan = columns;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const cells of rows) {
      const tr = el("tr");
      for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
      body.append(tr);
    }
  }

  function badge(kind, value) {
    const td = el("td");
    const span = el("span", value, "state " + kind + "-" + String(value).replace(/[^a-z_]/gi, ""));
    td.append(span);
    return td;
  }

  function time(seconds) {
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
  }

  function renderStatus(status) {
    const gw = status.gateway || {};
    const services = status.services || {};
    const names = Object.keys(services).sort();
    const up = names.filter((n) => services[n].state === "up").length;
    document.getElementById("summary").textContent =
      "gateway " + (gw.version || "?") + " · up " + duration(gw.uptime_s || 0) + " · " +
      up + " of " + names.length + " services up";
    fill("services", names.map((name) => {
      const s = services[name];
      const methods = el("td", (s.methods || []).join(", "), "method-list");
      return [name, badge("state", s.state), s.version || "", s.calls || 0, s.in_flight || 0, methods];
    }), 6);
    const refused = Object.entries(status.refused_capability_files || {});
    const refusedNode = document.getElementById("refused");
    refusedNode.hidden = refused.length === 0;
    refusedNode.textContent = refused.map(([file, why]) => "refused " + file + ": " + why).join("; ");
    renderUpstreams(status.upstreams || {});
    fill("clients", (status.clients || []).map((c) => [
      c.name, c.transport, c.tier, c.in_flight, time(c.connected_at),
    ]), 5);
    const usage = status.usage || {};
    fill("usage", Object.keys(usage).sort().map((id) => {
      const u = usage[id];
      return [u.name || id, u.requests_today || 0, u.requests_in_window || 0, u.llm_tokens_today || 0];
    }), 4);
    const list = document.getElementById("methods");
    list.replaceChildren(...(status.methods || []).map((m) => el("li", m)));
  }

  function renderUpstreams(upstreams) {
    const servers = upstreams.servers || {};
    const names = Object.keys(servers).sort();
    const dash = (value) => (value === undefined || value === null ? "-" : value);
    fill("upstreams", names.map((name) => {
      const u = servers[name];
      return [name, badge("state", u.state || "unknown"), dash(u.transport), dash(u.tools), dash(u.calls),
        dash(u.errors), dash(u.restarts), el("td", dash(u.last_error), "last-error")];
    }), 8);
    const notes = [];
    const program = upstreams.program || {};
    if (program.error) notes.push(program.error);
    if (program.registry_error) notes.push("registry: " + program.registry_error);
    if (program.present && program.running === false) notes.push("the upstream program is not running");
    for (const name of names) {
      const u = servers[name];
      const left = Object.assign({}, u.refused_tools || {}, u.name_collisions || {});
      for (const [tool, why] of Object.entries(left)) notes.push(name + ": " + tool + " left out: " + why);
    }
    const node = document.getElementById("upstream-notes");
    node.hidden = notes.length === 0;
    node.textContent = notes.join("; ");
  }

  function renderAudit(data) {
    fill("audit", (data.audit || []).map((e) => [
      (e.ts || "").replace("T", " ").replace("Z", ""),
      e.event || "",
      badge("outcome", e.outcome || e.decision || ""),
      e.name || e.client || "",
      e.method || e.model || "",
      e.reason || "",
    ]), 6);
  }

  async function getJson(path) {
    const answer = await fetch(path, { headers: headers, cache: "no-store", credentials: "omit" });
    if (!answer.ok) {
      const err = new Error(path + " answered " + answer.status);
      err.status = answer.status;
      throw err;
    }
    return answer.json();
  }

  async function refresh() {
    const error = document.getElementById("error");
    try {
      const [status, audit] = await Promise.all([getJson("/status"), getJson("/ui/data")]);
      renderStatus(status);
      renderAudit(audit);
      error.hidden = true;
      document.getElementById("updated").textContent =
        "Updated " + new Date().toLocaleTimeString() + "; refreshes every " + REFRESH_MS / 1000 + " s.";
    } catch (exc) {
      error.hidden = false;
      if (exc.status === 401) {
        error.textContent = "The token is no longer valid: open the page again with a valid token.";
        clearInterval(timer);
        return;
      }
      error.textContent = "Cannot refresh: " + exc.message;
    }
  }

  refresh();
  timer = setInterval(refresh, REFRESH_MS);
})();
