// The admin page: queue state and figures, PixelLab's state (with Resume), and the
// dead-letter queue with retry (one, or every entry of an error type) and delete.
"use strict";

(() => {
  const SQ = window.SQ;
  const { api, h } = SQ;

  const REFRESH_MS = 5000;
  const PAGE_SIZE = 50;
  const MAX_PAGE = 200; // the API's own limit for one page
  const CONFIRM_MS = 4000;
  const STATE_LABELS = { ok: "OK", warning: "Warning", critical: "Critical" };
  // PixelLab's state as the service sees it (GET /v1/queue's `upstream`), shown with the
  // queue badge's colours.
  const UPSTREAM = {
    ok: { label: "OK", badge: "ok" },
    throttled: { label: "Throttled", badge: "warning" },
    paused: { label: "Paused", badge: "critical" },
  };

  const token = SQ.sessionValue("spritequeue.adminToken");
  const rows = new Map();
  let nextCursor = null;
  let timer = null;
  let refreshing = false;
  // Bumped by every retry and delete: a refresh that began before one is stale and would put
  // a row back that the admin just removed.
  let generation = 0;

  const $ = (selector) => document.querySelector(selector);
  const ui = {
    signIn: $("#sign-in"),
    signInForm: $("#sign-in-form"),
    tokenInput: $("#token-input"),
    signInError: $("#sign-in-error"),
    signOut: $("#sign-out"),
    console: $("#console"),
    updated: $("#updated"),
    state: $("#queue-state"),
    meter: $("#meter"),
    meterFill: $("#meter-fill"),
    meterWarning: $("#meter-warning"),
    alert: $("#admin-alert"),
    table: $("#dlq-table"),
    rows: $("#dlq-rows"),
    empty: $("#dlq-empty"),
    more: $("#dlq-more"),
    refresh: $("#refresh"),
    upstream: $("#upstream"),
    upstreamState: $("#upstream-state"),
    upstreamReason: $("#upstream-reason"),
    resume: $("#upstream-resume"),
    balance: $("#upstream-balance"),
    bulkForm: $("#bulk-retry"),
    bulkType: $("#bulk-type"),
    bulkSubmit: $("#bulk-submit"),
  };

  // ---- session ------------------------------------------------------------------------------

  function problemWith(error) {
    if (error.status === 401) return "This token was not accepted.";
    if (error.status === 403) return "This token is not an admin token.";
    return error.message;
  }

  function showConsole() {
    ui.signIn.hidden = true;
    ui.console.hidden = false;
    ui.signOut.hidden = false;
    refresh().finally(schedule);
  }

  function signOut(message = "") {
    clearTimeout(timer);
    token.clear();
    for (const row of rows.values()) row.element.remove();
    rows.clear();
    ui.console.hidden = true;
    ui.signOut.hidden = true;
    ui.updated.textContent = "";
    ui.signIn.hidden = false;
    ui.signInError.textContent = message;
    ui.tokenInput.focus();
  }

  /** 401/403 end the session; true when the error was one of them. */
  function endedSession(error) {
    if (error.status !== 401 && error.status !== 403) return false;
    signOut(`${problemWith(error)} Sign in again.`);
    return true;
  }

  SQ.bindSignIn({
    form: ui.signInForm,
    input: ui.tokenInput,
    error: ui.signInError,
    token,
    probePath: "/v1/admin/dlq?limit=1",
    describe: problemWith,
    onSignedIn: showConsole,
  });

  ui.signOut.addEventListener("click", () => signOut());

  // ---- refreshing ---------------------------------------------------------------------------

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden && token.get()) await refresh();
      if (token.get()) schedule();
    }, REFRESH_MS);
  }

  async function refresh() {
    if (refreshing || !token.get()) return;
    refreshing = true;
    const started = generation;
    const limit = Math.min(MAX_PAGE, Math.max(PAGE_SIZE, rows.size));
    try {
      const [queue, stats, dlq] = await Promise.allSettled([
        api("/v1/queue"),
        api("/v1/admin/stats", { token: token.get() }),
        api(`/v1/admin/dlq?limit=${limit}`, { token: token.get() }),
      ]);
      for (const answer of [stats, dlq]) {
        if (answer.status === "rejected" && endedSession(answer.reason)) return;
      }
      if (queue.status === "fulfilled") {
        renderQueue(queue.value.body, stats.status === "fulfilled" ? stats.value.body : null);
      }
      if (dlq.status === "fulfilled" && started === generation) {
        renderRows(dlq.value.body.items, { replace: true });
        nextCursor = dlq.value.body.next_cursor;
        ui.more.hidden = !nextCursor;
      }
      const failed = [queue, stats, dlq].find((answer) => answer.status === "rejected");
      if (failed) showAlert("Could not refresh", failed.reason.message);
      else if (ui.alert.dataset.source === "refresh") hideAlert();
      ui.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      await refreshBalance();
    } finally {
      refreshing = false;
    }
  }

  function showAlert(title, message, retryAfter = null, source = "refresh") {
    const lines = [h("strong", { text: title }), h("div", { text: message })];
    if (retryAfter !== null && retryAfter !== undefined) {
      lines.push(h("div", { text: `Try again in ${retryAfter} s.` }));
    }
    ui.alert.replaceChildren(...lines);
    ui.alert.className = "alert error";
    ui.alert.dataset.source = source;
    ui.alert.hidden = false;
  }

  function hideAlert() {
    ui.alert.hidden = true;
    ui.alert.dataset.source = "";
  }

  // ---- queue --------------------------------------------------------------------------------

  function setStat(id, text) {
    $(`#stat-${id}`).textContent = text;
  }

  /** PixelLab's state; an older server without the field shows nothing. */
  function renderUpstream(upstream) {
    if (!upstream || !upstream.state) {
      ui.upstream.hidden = true;
      return;
    }
    const known = UPSTREAM[upstream.state] || { label: upstream.state, badge: "unknown" };
    ui.upstream.hidden = false;
    ui.upstream.dataset.state = upstream.state;
    ui.upstreamState.dataset.state = known.badge;
    ui.upstreamState.textContent = known.label;
    const parts = [];
    if (upstream.reason) parts.push(upstream.reason);
    if (upstream.since) parts.push(`since ${SQ.formatAgo(upstream.since)}`);
    ui.upstreamReason.textContent = parts.join(" · ");
    ui.upstreamReason.title = upstream.since ? SQ.formatTime(upstream.since) : "";
    ui.resume.hidden = upstream.state !== "paused";
  }

  /** PixelLab's credit as a worker last read it (GET /v1/admin/upstream), with its age. */
  async function refreshBalance() {
    let view;
    try {
      ({ body: view } = await api("/v1/admin/upstream", { token: token.get() }));
    } catch (error) {
      if (!endedSession(error)) ui.balance.hidden = true; // an older server: no balance
      return;
    }
    const balance = view && view.balance;
    ui.balance.hidden = false;
    if (!balance) {
      ui.balance.textContent = "balance not read yet";
      ui.balance.dataset.known = "false";
      return;
    }
    ui.balance.dataset.known = "true";
    ui.balance.textContent = `$${balance.usd.toFixed(2)} credit · checked ${SQ.formatAgo(balance.checked_at)}`;
    ui.balance.title = `PixelLab's GET /balance, read ${SQ.formatTime(balance.checked_at)}`;
  }

  ui.resume.addEventListener("click", async () => {
    ui.resume.disabled = true;
    try {
      const { body } = await api("/v1/admin/upstream/resume", { method: "POST", token: token.get() });
      renderUpstream(body && body.state ? body : { state: "ok", reason: null, since: null });
      SQ.toast("PixelLab calls resumed.", "success");
      refresh();
    } catch (error) {
      if (!endedSession(error)) showAlert("Resume failed", error.message, error.retryAfter, "action");
    } finally {
      ui.resume.disabled = false;
    }
  });

  ui.bulkForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorType = ui.bulkType.value;
    ui.bulkSubmit.disabled = true;
    try {
      const { body } = await api("/v1/admin/dlq/retry", {
        method: "POST",
        token: token.get(),
        body: { error_type: errorType },
      });
      generation += 1;
      for (const jobId of body.job_ids) removeRow(jobId);
      const left = body.remaining ? `; ${body.remaining} left (the queue is full)` : "";
      SQ.toast(`${body.requeued} ${errorType} job${body.requeued === 1 ? "" : "s"} requeued${left}.`,
        body.requeued ? "success" : undefined);
      if (body.remaining) showAlert("The queue is full", `${body.remaining} ${errorType} dead letters were left in place.`, null, "action");
      refresh();
    } catch (error) {
      if (!endedSession(error)) showAlert("Bulk retry failed", error.message, error.retryAfter, "action");
    } finally {
      ui.bulkSubmit.disabled = false;
    }
  });

  function renderQueue(queue, stats) {
    renderUpstream(queue.upstream);
    ui.state.dataset.state = queue.state;
    ui.state.textContent = STATE_LABELS[queue.state] || queue.state;
    ui.meter.dataset.state = queue.state;
    const inflight = queue.waiting + queue.active;
    const used = queue.capacity ? Math.min(100, (100 * inflight) / queue.capacity) : 0;
    ui.meterFill.style.width = `${used}%`;
    $("#meter-used").textContent = `${inflight} of ${queue.capacity} queued or running (${Math.round(used)} %)`;
    setStat("waiting", String(queue.waiting));
    setStat("active", String(queue.active));
    setStat("capacity", String(queue.capacity));
    setStat("wait", SQ.formatSeconds(queue.estimated_wait_s));
    if (!stats) return;
    const warningAt = stats.queue && stats.queue.warning_at;
    ui.meterWarning.hidden = !warningAt || !queue.capacity;
    if (warningAt && queue.capacity) {
      ui.meterWarning.style.left = `${Math.min(100, (100 * warningAt) / queue.capacity)}%`;
      ui.meterWarning.title = `Warning at ${warningAt}`;
    }
    $("#meter-threshold").textContent = warningAt ? `warning at ${warningAt} · critical at ${queue.capacity}` : "";
    setStat("workers", String(stats.workers_alive));
    setStat("p95", stats.durations_s && stats.durations_s.p95 !== null ? SQ.formatSeconds(stats.durations_s.p95) : "–");
    const rate = stats.cache && stats.cache.hit_rate;
    setStat("cache", rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)} %`);
    setStat("dlq", String(stats.dlq_size));
  }

  // ---- dead letters -------------------------------------------------------------------------

  function renderRows(items, { replace }) {
    if (replace) {
      const listed = new Set(items.map((entry) => entry.job_id));
      for (const jobId of rows.keys()) {
        if (!listed.has(jobId)) removeRow(jobId);
      }
    }
    // append() moves a row that is already shown, so the table ends in the list's order.
    for (const entry of items) {
      let row = rows.get(entry.job_id);
      if (!row) {
        row = buildRow(entry);
        rows.set(entry.job_id, row);
      }
      row.failed.textContent = SQ.formatAgo(entry.failed_at);
      ui.rows.append(row.element);
    }
    updateEmpty();
  }

  function updateEmpty() {
    ui.table.hidden = rows.size === 0;
    ui.empty.hidden = rows.size > 0;
  }

  function removeRow(jobId) {
    const row = rows.get(jobId);
    if (!row) return;
    row.element.remove();
    rows.delete(jobId);
    updateEmpty();
  }

  function attemptsSummary(entry) {
    return (entry.history || [])
      .map((attempt) => {
        const what = attempt.error ? `${attempt.error.type}: ${attempt.error.message}` : attempt.outcome || "";
        return `#${attempt.number} ${what}`.trim();
      })
      .join("\n");
  }

  function buildRow(entry) {
    const error = entry.error || { type: "unknown", message: "" };
    const description = (entry.request && entry.request.description) || "";
    const failed = h("span", { title: SQ.formatTime(entry.failed_at) });
    const retry = h("button", { type: "button", class: "button small retry", text: "Retry" });
    const remove = h("button", { type: "button", class: "button ghost small danger-text delete", text: "Delete" });
    const element = h(
      "tr",
      { dataset: { jobId: entry.job_id } },
      h(
        "td",
        { class: "job-cell" },
        h("code", { class: "job-id", title: entry.job_id, text: entry.job_id.slice(0, 12) }),
        description && h("div", { class: "description", title: description, text: description }),
      ),
      h("td", { class: "user", text: entry.user }),
      h(
        "td",
        { class: "error-cell" },
        h("span", { class: `badge error-type error-${error.type}`, text: error.type }),
        h("div", { class: "error-message", title: error.message, text: error.message }),
      ),
      h("td", { class: "num attempts", title: attemptsSummary(entry), text: String(entry.attempts ?? "") }),
      h("td", { class: "failed" }, failed),
      h("td", { class: "actions" }, retry, remove),
    );
    const row = { element, failed, retry, remove };
    retry.addEventListener("click", () => retryEntry(entry.job_id, row));
    remove.addEventListener("click", () => deleteEntry(entry.job_id, row));
    return row;
  }

  function setBusy(row, busy) {
    row.retry.disabled = busy;
    row.remove.disabled = busy;
  }

  async function retryEntry(jobId, row) {
    setBusy(row, true);
    try {
      const { body } = await api(`/v1/admin/dlq/${encodeURIComponent(jobId)}/retry`, {
        method: "POST",
        token: token.get(),
      });
      generation += 1;
      removeRow(jobId);
      const where = body.position ? ` at position ${body.position}` : "";
      SQ.toast(`Job ${jobId.slice(0, 12)} requeued${where}.`, "success");
    } catch (error) {
      if (endedSession(error)) return;
      if (error.status === 404) {
        generation += 1;
        removeRow(jobId);
        SQ.toast("That entry was already gone.");
        return;
      }
      const title = error.code === "queue_full" ? "The queue is full" : "Retry failed";
      showAlert(title, error.message, error.retryAfter, "action");
      setBusy(row, false);
    }
  }

  async function deleteEntry(jobId, row) {
    // Two clicks: a dead letter is the only record of a failure, so removal is confirmed.
    if (row.remove.dataset.confirm !== "yes") {
      row.remove.dataset.confirm = "yes";
      row.remove.textContent = "Confirm delete";
      row.remove.classList.add("confirm");
      row.confirmTimer = setTimeout(() => {
        row.remove.dataset.confirm = "";
        row.remove.textContent = "Delete";
        row.remove.classList.remove("confirm");
      }, CONFIRM_MS);
      return;
    }
    clearTimeout(row.confirmTimer);
    setBusy(row, true);
    try {
      await api(`/v1/admin/dlq/${encodeURIComponent(jobId)}`, { method: "DELETE", token: token.get() });
      generation += 1;
      removeRow(jobId);
      SQ.toast(`Dead letter ${jobId.slice(0, 12)} deleted.`);
    } catch (error) {
      if (endedSession(error)) return;
      if (error.status === 404) {
        generation += 1;
        removeRow(jobId);
        return;
      }
      showAlert("Delete failed", error.message, null, "action");
      setBusy(row, false);
    }
  }

  ui.more.addEventListener("click", async () => {
    if (!nextCursor) return;
    try {
      const { body } = await api(`/v1/admin/dlq?limit=${PAGE_SIZE}&cursor=${encodeURIComponent(nextCursor)}`, {
        token: token.get(),
      });
      renderRows(body.items, { replace: false });
      nextCursor = body.next_cursor;
      ui.more.hidden = !nextCursor;
    } catch (error) {
      if (!endedSession(error)) showAlert("Could not load more", error.message);
    }
  });

  ui.refresh.addEventListener("click", () => refresh());

  if (token.get()) showConsole();
  else signOut();
})();
