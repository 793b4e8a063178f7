// runner's dashboard: polls the API with the key kept in sessionStorage and renders with DOM nodes
// and textContent only (never parsed as HTML), so no server string can become markup. No build step, no
// libraries: the page's Content-Security-Policy allows scripts and fetches from this origin alone.
"use strict";

(() => {
  const KEY_STORE = "runner.apiKey";
  const POLL_MS = 1000;
  const ENDED = new Set(["completed", "failed", "expired", "cancelled"]);
  const STATUSES = new Set(["validating", "in_progress", "finalizing", "cancelling", ...ENDED]);
  const MAX_ERRORS_SHOWN = 5;

  const $ = (id) => document.getElementById(id);
  const rows = new Map(); // batch id -> {tr, cells}
  let timer = null;
  let polling = false;
  let generation = 0; // bumped when the key changes, so an answer for the old key is dropped

  function storedKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function authHeaders() {
    const key = storedKey();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  // el("td", {className: "x"}, child, "text", ...): strings become text nodes.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function setConn(text) {
    $("conn").textContent = text;
  }

  async function getJson(path) {
    const resp = await fetch(path, { headers: authHeaders(), cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    return { status: resp.status, ok: resp.ok, body };
  }

  function errorText(result) {
    const err = result.body && result.body.error;
    if (err && typeof err.message === "string") return err.message;
    return "HTTP " + result.status;
  }

  function num(x, digits) {
    return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "-";
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "-";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, "0");
    if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m > 0) return `${m}m ${sec}s`;
    return `${s % 60}s`;
  }

  function endedAt(b) {
    return b.completed_at || b.failed_at || b.expired_at || b.cancelled_at || null;
  }

  // -- engine ------------------------------------------------------------------------------------

  function renderHealth(result) {
    const h = result.body || {};
    const badge = $("health-status");
    const status = typeof h.status === "string" ? h.status : "unreachable";
    badge.textContent = status;
    badge.className = "badge hs-" + (["ok", "degraded", "unhealthy", "starting"].includes(status) ? status : "other");
    const engine = h.engine;
    let line;
    if (engine === null) {
      line = "No engine: the server runs with --no-engine, so batches stay in_progress.";
    } else if (engine && typeof engine === "object") {
      line = `engine ${engine.alive ? "alive" : "not running"}, pid ${engine.pid ?? "-"}, ` +
        `${engine.restarts ?? 0} restart(s)`;
      if (engine.waiting_for_lock) line += ", waiting for engine.lock";
    } else {
      line = "";
    }
    $("engine-line").textContent = line;
    const reasons = $("health-reasons");
    reasons.replaceChildren(...(Array.isArray(h.reasons) ? h.reasons : []).map((r) =>
      el("li", {}, el("code", {}, String(r && r.code)), " " + String(r && r.message))));
    const tbody = $("models").tBodies[0];
    const models = h.models && typeof h.models === "object" ? Object.entries(h.models) : [];
    tbody.replaceChildren(...models.map(([id, m]) => el("tr", { className: "model" },
      el("td", {}, el("code", {}, id)),
      el("td", { className: "model-state" }, String(m.state)),
      el("td", {}, String(m.attempts ?? 0)),
      el("td", { className: "model-error" }, m.error ? String(m.error) : ""))));
    if (models.length === 0) {
      tbody.append(el("tr", {}, el("td", { colSpan: 4, className: "muted" },
        "No model loaded yet: the engine loads a model when a batch needs it.")));
    }
  }

  // -- batches -----------------------------------------------------------------------------------

  async function download(event, fileId, name) {
    event.preventDefault();
    const link = event.currentTarget;
    try {
      const resp = await fetch("/v1/files/" + encodeURIComponent(fileId) + "/content", { headers: authHeaders() });
      if (!resp.ok) {
        let body = null;
        try {
          body = await resp.json();
        } catch (_) {
          body = null;
        }
        link.title = errorText({ status: resp.status, body });
        setConn("Download failed: " + link.title);
        return;
      }
      const url = URL.createObjectURL(await resp.blob());
      const a = el("a", { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      setConn("Download failed: " + err.message);
    }
  }

  function fileLink(fileId, batchId, kind) {
    const a = el("a", {
      href: "/v1/files/" + encodeURIComponent(fileId) + "/content",
      className: "dl dl-" + kind,
      title: fileId,
    }, kind + ".jsonl");
    a.addEventListener("click", (e) => download(e, fileId, `${batchId}_${kind}.jsonl`));
    return a;
  }

  function newRow(id) {
    const cells = {};
    const td = (name) => (cells[name] = el("td", { className: "c-" + name }));
    const tr = el("tr", { className: "batch" }, td("id"), td("status"), td("progress"), td("lps"), td("tps"),
      td("eta"), td("elapsed"), td("errors"), td("files"));
    tr.dataset.batchId = id;
    cells.progressBar = el("progress", { max: 1 });
    cells.progressText = el("span", { className: "progress-text" });
    cells.progress.append(cells.progressBar, cells.progressText);
    return { tr, cells, filesKey: "" };
  }

  function updateRow(row, b) {
    const c = row.cells;
    const created = new Date(b.created_at * 1000).toLocaleString();
    c.id.replaceChildren(el("code", {}, String(b.id)),
      el("div", { className: "muted small" }, [b.model, b.endpoint, created].filter(Boolean).map(String).join(" · ")));

    const status = String(b.status);
    c.status.replaceChildren(el("span", { className: "badge st-" + (STATUSES.has(status) ? status : "other") },
      status));

    const rc = b.request_counts || {};
    const total = rc.total || 0;
    const done = (rc.completed || 0) + (rc.failed || 0);
    if (total > 0) {
      c.progressBar.max = total;
      c.progressBar.value = done;
      c.progressText.textContent = `${done} / ${total}`;
    } else {
      c.progressBar.removeAttribute("value"); // indeterminate while validating
      c.progressText.textContent = status === "validating" ? "validating" : "0 / 0";
    }

    const t = b.throughput && typeof b.throughput === "object" ? b.throughput : null;
    c.lps.textContent = num(t && t.lines_per_second, 1);
    c.tps.textContent = num(t && t.output_tokens_per_second, 0);
    c.eta.textContent = t ? duration(t.eta_seconds) : "-";

    // Elapsed is the one figure the page computes itself (the server's clock vs this one's).
    const start = b.in_progress_at || b.created_at;
    const end = endedAt(b) || Date.now() / 1000;
    c.elapsed.textContent = duration(end - start);

    const items = [];
    if (rc.failed) items.push(el("li", { className: "failed-lines" }, `${rc.failed} failed line(s)`));
    const errs = b.errors && Array.isArray(b.errors.data) ? b.errors.data : [];
    for (const e of errs.slice(0, MAX_ERRORS_SHOWN)) {
      const where = e.line !== null && e.line !== undefined ? ` (line ${e.line})` : "";
      items.push(el("li", { className: "batch-error" }, el("code", {}, String(e.code ?? "error")),
        " " + String(e.message ?? "") + where));
    }
    if (errs.length > MAX_ERRORS_SHOWN) items.push(el("li", { className: "muted" },
      `and ${errs.length - MAX_ERRORS_SHOWN} more`));
    c.errors.replaceChildren(items.length ? el("ul", { className: "errors" }, ...items) : "");

    // Links once the batch has ended (the files are whole then); rebuilt only when they change.
    const ended = ENDED.has(status);
    const filesKey = ended ? `${b.output_file_id}|${b.error_file_id}` : "";
    if (filesKey !== row.filesKey) {
      row.filesKey = filesKey;
      const links = [];
      if (ended && b.output_file_id) links.push(fileLink(b.output_file_id, b.id, "output"));
      if (ended && b.error_file_id) links.push(fileLink(b.error_file_id, b.id, "errors"));
      c.files.replaceChildren(...links);
    }
  }

  function renderBatches(list) {
    const tbody = $("batches").tBodies[0];
    const seen = new Set();
    for (const b of list) {
      if (!b || typeof b.id !== "string") continue;
      seen.add(b.id);
      let row = rows.get(b.id);
      if (!row) {
        row = newRow(b.id);
        rows.set(b.id, row);
      }
      updateRow(row, b);
      tbody.append(row.tr); // moves an existing row: keeps the server's order (newest first)
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    $("no-batches").hidden = rows.size > 0;
  }

  function clearBatches() {
    for (const row of rows.values()) row.tr.remove();
    rows.clear();
    $("no-batches").hidden = true;
  }

  // -- polling -----------------------------------------------------------------------------------

  async function poll() {
    if (polling) return;
    polling = true;
    const gen = generation;
    try {
      const [health, batches] = await Promise.all([getJson("/health"), getJson("/v1/batches?limit=100")]);
      if (gen !== generation) return;
      renderHealth(health);
      if (batches.ok && batches.body && Array.isArray(batches.body.data)) {
        renderBatches(batches.body.data);
        setConn("");
      } else {
        clearBatches();
        setConn(batches.status === 401 && !storedKey() ? "Enter your API key to see your batches."
          : "Batches: " + errorText(batches));
      }
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      if (gen === generation) setConn("Cannot reach the server: " + err.message);
    } finally {
      polling = false;
      schedule();
    }
  }

  function schedule() {
    clearTimeout(timer);
    // A hidden tab polls nothing; it catches up as soon as it is shown again.
    if (!document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function restart() {
    generation += 1;
    clearBatches();
    polling = false;
    clearTimeout(timer);
    poll();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else poll();
  });

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $("key").value = "";
    $("key").placeholder = key ? "key set for this tab" : "sk-...";
    restart();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("key").placeholder = "sk-...";
    restart();
  });

  if (storedKey()) $("key").placeholder = "key set for this tab";
  poll();
})();
