// The artist page: sign in, submit requests (any operation, see operations.js), follow jobs
// live, view and save sprites, preview animations, and chain a result into the next job.
"use strict";

(() => {
  const SQ = window.SQ;
  const { ApiError, api, h } = SQ;

  const FINAL = new Set(["completed", "failed", "cancelled"]);
  const STAGES = {
    queued: "Waiting in queue",
    started: "Starting",
    submitted: "Generating at PixelLab",
    received: "Image received",
    completed: "Done",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  // Browsers open at most six HTTP/1.1 connections per origin; every open event stream holds
  // one, so beyond this many the other jobs poll and the page's own calls still get through.
  const MAX_STREAMS = 4;
  const TILE_PX = 128;
  const JOBS_SHOWN = 20;
  const DEFAULT_GUIDANCE = 8;

  const token = SQ.sessionValue("spritequeue.token");
  const prompts = promptBook("spritequeue.prompts");
  const cards = new Map();
  let openStreams = 0;

  const $ = (selector) => document.querySelector(selector);
  const ui = {
    signIn: $("#sign-in"),
    signInForm: $("#sign-in-form"),
    tokenInput: $("#token-input"),
    signInError: $("#sign-in-error"),
    signOut: $("#sign-out"),
    studio: $("#studio"),
    form: $("#sprite-form"),
    formAlert: $("#form-alert"),
    submit: $("#submit"),
    description: $("#description"),
    descriptionCount: $("#description-count"),
    guidance: $("#guidance"),
    guidanceValue: $("#guidance-value"),
    jobs: $("#jobs"),
    jobsEmpty: $("#jobs-empty"),
    refresh: $("#refresh-jobs"),
  };

  /** The prompts of this tab's jobs (the job views do not carry them), in sessionStorage. */
  function promptBook(key) {
    const store = SQ.sessionValue(key);
    let book = {};
    try {
      book = JSON.parse(store.get() || "{}");
    } catch {
      book = {};
    }
    return {
      get: (jobId) => book[jobId],
      remember(jobId, text) {
        book[jobId] = text.replace(/\s+/g, " ").trim();
        const ids = Object.keys(book);
        if (ids.length > 100) delete book[ids[0]];
        store.set(JSON.stringify(book));
      },
      clear() {
        book = {};
        store.clear();
      },
    };
  }

  // ---- session ------------------------------------------------------------------------------

  function showStudio() {
    ui.signIn.hidden = true;
    ui.studio.hidden = false;
    ui.signOut.hidden = false;
    loadJobs();
  }

  function showSignIn(message = "") {
    ui.studio.hidden = true;
    ui.signOut.hidden = true;
    ui.signIn.hidden = false;
    ui.signInError.textContent = message;
    ui.tokenInput.focus();
  }

  function signOut(message = "") {
    token.clear();
    prompts.clear();
    for (const card of cards.values()) card.destroy();
    cards.clear();
    updateEmpty();
    showSignIn(message);
  }

  const expired = () => signOut("Your token is no longer accepted; sign in again.");

  SQ.bindSignIn({
    form: ui.signInForm,
    input: ui.tokenInput,
    error: ui.signInError,
    token,
    probePath: "/v1/jobs?limit=1",
    describe: (error) => (error.status === 401 ? "This token was not accepted." : error.message),
    onSignedIn: showStudio,
  });

  ui.signOut.addEventListener("click", () => signOut());

  // ---- the request form ---------------------------------------------------------------------

  function numberField(selector) {
    const raw = $(selector).value.trim();
    if (raw === "") return undefined;
    const number = Number(raw);
    return Number.isFinite(number) ? number : raw;
  }

  /** The request body: only what the artist set, so defaults stay the server's. */
  function readRequest() {
    const body = {
      description: ui.description.value,
      image_size: { width: numberField("#width"), height: numberField("#height") },
    };
    for (const name of ["outline", "shading", "detail", "view", "direction"]) {
      const value = $(`#${name}`).value;
      if (value) body[name] = value;
    }
    if ($("#isometric").checked) body.isometric = true;
    if ($("#no-background").checked) body.no_background = true;
    const guidance = Number(ui.guidance.value);
    if (guidance !== DEFAULT_GUIDANCE) body.text_guidance_scale = guidance;
    const seed = numberField("#seed");
    if (seed !== undefined) body.seed = seed;
    const timeout = numberField("#timeout");
    if (timeout !== undefined) body.timeout_s = timeout;
    const variants = Number($("#variants").value);
    if (variants > 1) body.variants = variants;
    const priority = $("#priority").value;
    if (priority !== "normal") body.priority = priority;
    return body;
  }

  function fieldContainer(path) {
    let prefix = path;
    while (prefix) {
      const found = ui.form.querySelector(`[data-field="${CSS.escape(prefix)}"]`);
      if (found) return found;
      const dot = prefix.lastIndexOf(".");
      if (dot < 0) break;
      prefix = prefix.slice(0, dot);
    }
    return null;
  }

  function clearErrors() {
    ui.form.querySelectorAll(".field-error").forEach((list) => list.replaceChildren());
    ui.form.querySelectorAll(".invalid").forEach((field) => field.classList.remove("invalid"));
    ui.form.querySelectorAll("[aria-invalid]").forEach((input) => input.removeAttribute("aria-invalid"));
    hideAlert();
  }

  /** Put each of the API's 422 details ({field, reason}) beside the control it names. */
  function showFieldErrors(details, message) {
    const unplaced = [];
    for (const { field, reason } of details) {
      const path = String(field ?? "");
      const container = fieldContainer(path);
      if (!container) {
        unplaced.push(path && path !== "(body)" ? `${path}: ${reason}` : reason);
        continue;
      }
      const sub = path === container.dataset.field ? "" : path.slice(container.dataset.field.length + 1);
      container.classList.add("invalid");
      container.querySelector(".field-error").append(h("li", { text: sub ? `${sub}: ${reason}` : reason }));
      container.querySelectorAll("[data-path]").forEach((input) => {
        if (!sub || input.dataset.path === path) input.setAttribute("aria-invalid", "true");
      });
      const section = container.closest("details");
      if (section) section.open = true;
    }
    if (unplaced.length || !details.length) {
      showAlert("error", "The request was not accepted", unplaced.length ? unplaced : [message]);
    }
    const first = ui.form.querySelector("[aria-invalid]");
    if (first) first.focus();
  }

  let countdown = null;

  /** A message above the submit button; with retryAfter, a live "try again in N s". */
  function showAlert(kind, title, lines = [], retryAfter = null) {
    clearInterval(countdown);
    ui.formAlert.className = `alert ${kind}`;
    ui.formAlert.replaceChildren(
      h("strong", { text: title }),
      ...lines.filter(Boolean).map((line) => h("div", { text: line })),
    );
    ui.formAlert.hidden = false;
    if (retryAfter === null || retryAfter === undefined) return;
    const until = Date.now() + retryAfter * 1000;
    const line = h("div", { class: "retry-after" });
    ui.formAlert.append(line);
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      line.textContent = left > 0 ? `Try again in ${left} s.` : "You can try again now.";
      if (left <= 0) clearInterval(countdown);
    };
    tick();
    countdown = setInterval(tick, 1000);
  }

  function hideAlert() {
    clearInterval(countdown);
    ui.formAlert.hidden = true;
    ui.formAlert.replaceChildren();
  }

  const sentence = (text) => {
    const trimmed = String(text || "").trim();
    if (!trimmed) return "";
    const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
    return /[.!?]$/.test(capital) ? capital : `${capital}.`;
  };

  function showSubmitError(error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) return expired();
    if (error.status === 422) return showFieldErrors(error.details, error.message);
    if (error.code === "user_limit") {
      return showAlert("warning", "You have too many jobs in progress", [sentence(error.message)], error.retryAfter);
    }
    if (error.code === "queue_full") {
      return showAlert(
        "warning",
        "The queue is full",
        ["New jobs are refused until running ones finish."],
        error.retryAfter,
      );
    }
    if (error.status === 503) {
      return showAlert("error", "The service is unavailable", [sentence(error.message)], error.retryAfter);
    }
    return showAlert("error", "The request failed", [sentence(error.message)]);
  }

  ui.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const request = SQ.operations ? SQ.operations.body(readRequest()) : readRequest();
    ui.submit.disabled = true;
    try {
      const { status, body } = await api("/v1/jobs", { method: "POST", token: token.get(), body: request });
      if (body.group_id) {
        for (const view of body.jobs) prompts.remember(view.job_id, promptOf(request));
        for (const view of [...body.jobs].reverse()) addCard(view, { toTop: true });
        SQ.toast(`Queued ${body.jobs.length} variants.`, "success");
        return;
      }
      prompts.remember(body.job_id, promptOf(request));
      addCard(body, { toTop: true });
      if (body.deduplicated) SQ.toast("The same request is already in progress: showing that job.");
      else if (status === 200) SQ.toast("Served from the cache.", "success");
      else SQ.toast(body.position ? `Queued at position ${body.position}.` : "Queued.", "success");
    } catch (error) {
      showSubmitError(error);
    } finally {
      ui.submit.disabled = false;
    }
  });

  /** What a job's card is titled by: its prompt, its action, or the operation. */
  function promptOf(request) {
    const text = [request.description, request.action].filter(Boolean).join(": ");
    return text || (request.operation || "pixflux").replace(/_/g, " ");
  }

  ui.description.addEventListener("input", () => {
    ui.descriptionCount.textContent = `${ui.description.value.length} / 2000`;
  });
  ui.guidance.addEventListener("input", () => {
    ui.guidanceValue.textContent = ui.guidance.value;
  });
  document.querySelectorAll("[data-size]").forEach((button) => {
    button.addEventListener("click", () => {
      $("#width").value = button.dataset.size;
      $("#height").value = button.dataset.size;
    });
  });

  // ---- jobs ---------------------------------------------------------------------------------

  /** Follows one job: its event stream while that works, then GET /v1/jobs/{id} polling. */
  class Tracker {
    constructor(card) {
      this.card = card;
      this.controller = new AbortController();
      this.lastEventId = null;
      this.running = false;
    }

    get signal() {
      return this.controller.signal;
    }

    stop() {
      this.controller.abort();
    }

    async run() {
      this.running = true;
      try {
        if (openStreams < MAX_STREAMS) {
          openStreams += 1;
          let finished = false;
          try {
            finished = await this.stream();
          } catch (error) {
            if (this.signal.aborted || this.fatal(error)) return;
          } finally {
            openStreams -= 1;
          }
          if (finished || this.signal.aborted) return;
        }
        await this.poll();
      } finally {
        this.running = false;
      }
    }

    /** Resolves true once a final event arrived; throws when the stream cannot be used. */
    async stream() {
      const headers = { Authorization: `Bearer ${token.get()}`, Accept: "text/event-stream" };
      if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
      const response = await fetch(`/v1/jobs/${encodeURIComponent(this.card.id)}/events`, {
        headers,
        cache: "no-store",
        signal: this.signal,
      });
      if (response.status === 204) return false; // already final; one poll reads that state
      if (!response.ok) throw new ApiError(response.status, `http_${response.status}`, "stream refused");
      if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        throw new Error("not an event stream");
      }
      this.card.setTransport("live");
      let finished = false;
      // Every event is the whole job view; while the job waits, the server pushes its new
      // position and ETA as jobs ahead of it start, so the stream alone keeps the card current.
      await SQ.readEventStream(response, ({ event, data, id }) => {
        if (id) this.lastEventId = id;
        let view;
        try {
          view = JSON.parse(data);
        } catch {
          return;
        }
        this.card.update(view);
        if (FINAL.has(event) || FINAL.has(view.status)) finished = true;
      });
      return finished;
    }

    async poll() {
      this.card.setTransport("polling");
      let etag = null;
      let delayMs = 0;
      let failures = 0;
      while (!this.signal.aborted) {
        await SQ.sleep(delayMs, this.signal);
        if (this.signal.aborted) return;
        try {
          const { status, headers, body } = await api(`/v1/jobs/${encodeURIComponent(this.card.id)}`, {
            token: token.get(),
            headers: etag ? { "If-None-Match": etag } : {},
            signal: this.signal,
          });
          failures = 0;
          const interval = Number(headers.get("X-Poll-Interval"));
          delayMs = Math.max(500, (interval > 0 ? interval : 2) * 1000);
          if (status === 304) continue;
          etag = headers.get("ETag");
          this.card.update(body);
          if (FINAL.has(body.status)) return;
        } catch (error) {
          if (this.signal.aborted || this.fatal(error)) return;
          failures += 1;
          delayMs = Math.min(10000, 1000 * 2 ** Math.min(failures, 4));
        }
      }
    }

    /** Handles the answers that end tracking for good; true when it did. */
    fatal(error) {
      if (error.status === 401) {
        expired();
        return true;
      }
      if (error.status === 404) {
        this.card.gone();
        return true;
      }
      return false;
    }
  }

  class JobCard {
    constructor(view) {
      this.id = view.job_id;
      this.view = null;
      this.tracker = null;
      this.spriteUrl = null;
      this.animationUrl = null;
      this.loadingSprite = false;
      this.build();
      this.update(view);
    }

    build() {
      this.art = h("div", { class: "job-art" }, h("div", { class: "art-placeholder" }));
      this.title = h("span", { class: "job-title" });
      this.badge = h("span", { class: "badge" });
      this.bar = h("div", { class: "bar" });
      this.progress = h(
        "div",
        { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": "Progress" },
        this.bar,
      );
      this.stage = h("span", { class: "stage" });
      this.percent = h("span", { class: "percent" });
      this.queueInfo = h("span", { class: "queue-info" });
      this.transport = h("span", { class: "transport" });
      this.tags = h("span", { class: "tags" });
      this.error = h("p", { class: "job-error", hidden: true });
      this.when = h("span", { class: "when muted" });
      this.cancelButton = h("button", {
        type: "button",
        class: "button ghost small cancel",
        text: "Cancel",
        onclick: () => this.cancel(),
      });
      this.download = h("a", {
        class: "button small download",
        text: "Download PNG",
        download: `sprite-${this.id.slice(0, 12)}.png`,
        hidden: true,
      });
      this.buildChaining();
      this.element = h(
        "li",
        { class: "job", dataset: { jobId: this.id } },
        this.art,
        h(
          "div",
          { class: "job-body" },
          h("div", { class: "job-head" }, this.title, this.badge),
          this.progress,
          h("div", { class: "job-meta" }, this.stage, this.percent, this.queueInfo, this.transport),
          this.error,
          h("div", { class: "job-foot" }, this.when, this.tags, h("span", { class: "spacer" }), this.cancelButton, this.useButton, this.download),
        ),
      );
    }

    update(view) {
      this.view = view;
      const final = FINAL.has(view.status);
      const percent = Math.max(0, Math.min(100, Math.round(view.progress || 0)));
      this.element.dataset.status = view.status;
      this.title.textContent = prompts.get(view.job_id) || view.description || `Sprite ${view.job_id.slice(0, 8)}`;
      this.title.title = `Job ${view.job_id}`;
      this.badge.textContent = view.status;
      this.badge.className = `badge status-${view.status}`;
      this.bar.style.width = `${percent}%`;
      this.progress.setAttribute("aria-valuenow", String(percent));
      this.percent.textContent = `${percent} %`;
      this.stage.textContent = STAGES[view.stage] || view.stage;
      this.queueInfo.textContent = queueText(view);
      this.transport.hidden = final;
      this.when.textContent = SQ.formatAgo(view.created_at);
      this.when.title = SQ.formatTime(view.created_at);
      this.tags.replaceChildren(
        ...[
          view.cached && "from cache",
          view.deduplicated && "deduplicated",
          view.operation && view.operation !== "pixflux" && view.operation.replace(/_/g, " "),
          ...resultTags(view.result),
        ]
          .filter(Boolean)
          .map((tag) => h("span", { class: "tag", text: tag })),
      );
      this.error.hidden = !view.error;
      if (view.error) this.error.textContent = `${view.error.type}: ${view.error.message}`;
      this.cancelButton.hidden = final;
      this.useButton.hidden = view.status !== "completed" || !SQ.operations;
      if (view.status === "completed" && !this.spriteUrl && !this.loadingSprite) this.loadSprite();
      if (!final) this.track();
    }

    track() {
      if (this.tracker && this.tracker.running) return;
      this.tracker = new Tracker(this);
      this.tracker.run();
    }

    setTransport(kind) {
      this.element.dataset.transport = kind;
      this.transport.textContent = kind === "live" ? "live" : "polling";
      this.transport.className = `transport ${kind}`;
    }

    /** Fetch the PNG with the token (an <img src> could not send it), show it, offer it. */
    async loadSprite() {
      this.loadingSprite = true;
      try {
        const blob = await SQ.fetchBlob(`/v1/jobs/${encodeURIComponent(this.id)}/result`, token.get());
        if (!cards.has(this.id)) return;
        this.spriteUrl = URL.createObjectURL(blob);
        const { width, height } = this.view.result || { width: TILE_PX, height: TILE_PX };
        const scale = Math.max(1, Math.floor(TILE_PX / Math.max(width, height)));
        const image = h("img", { class: "sprite", alt: `Sprite: ${this.title.textContent}` });
        image.style.width = `${width * scale}px`;
        image.title = `${width}×${height}, shown at ${scale}×`;
        image.src = this.spriteUrl;
        this.art.replaceChildren(image);
        this.download.href = this.spriteUrl;
        this.download.hidden = false;
        if ((this.view.result || {}).frames > 1) await this.showAnimation();
      } catch (error) {
        if (error.status === 401) return expired();
        this.error.hidden = false;
        this.error.textContent = `Could not load the sprite: ${error.message}`;
      } finally {
        this.loadingSprite = false;
      }
    }

    // ---- multi-frame results and chaining (issue 18) --------------------------------------

    buildChaining() {
      this.useButton = h("button", {
        type: "button",
        class: "button ghost small use-as-input",
        text: "Use as input",
        title: "Make this result an image input of the next job, without uploading it",
        hidden: true,
        onclick: () => SQ.operations.useJob(this.view, this.animationUrl || this.spriteUrl),
      });
    }

    /** An animation plays as the API's GIF preview, one frame wide; the sheet stays the download. */
    async showAnimation() {
      const { frames, frame_size: frame } = this.view.result;
      const blob = await SQ.fetchBlob(`/v1/jobs/${encodeURIComponent(this.id)}/result?format=gif`, token.get());
      if (!cards.has(this.id)) return;
      this.animationUrl = URL.createObjectURL(blob);
      const scale = Math.max(1, Math.floor(TILE_PX / Math.max(frame.width, frame.height)));
      const image = h("img", { class: "sprite animation", alt: `Animation: ${this.title.textContent}` });
      image.style.width = `${frame.width * scale}px`;
      image.title = `${frames} frames of ${frame.width}×${frame.height}, shown at ${scale}×`;
      image.src = this.animationUrl;
      this.art.replaceChildren(image);
      this.download.textContent = "Download sheet";
    }

    async cancel() {
      this.cancelButton.disabled = true;
      try {
        const { body } = await api(`/v1/jobs/${encodeURIComponent(this.id)}`, {
          method: "DELETE",
          token: token.get(),
        });
        if (this.tracker) this.tracker.stop();
        this.update(body);
        SQ.toast("Job cancelled.");
      } catch (error) {
        if (error.status === 401) return expired();
        if (error.status === 404) return this.gone();
        SQ.toast(error.status === 409 ? "The job had already finished." : error.message, "error");
      } finally {
        this.cancelButton.disabled = false;
      }
    }

    gone() {
      this.destroy();
      cards.delete(this.id);
      updateEmpty();
    }

    destroy() {
      if (this.tracker) this.tracker.stop();
      if (this.spriteUrl) URL.revokeObjectURL(this.spriteUrl);
      if (this.animationUrl) URL.revokeObjectURL(this.animationUrl);
      this.element.remove();
    }
  }

  /** The result's size tags: W×H, or the frame count and frame size of an animation. */
  function resultTags(result) {
    if (!result) return [];
    if (!(result.frames > 1)) return [`${result.width}×${result.height}`];
    const frame = result.frame_size || { width: result.width / result.frames, height: result.height };
    return [`${result.frames} frames`, `${frame.width}×${frame.height}`];
  }

  function queueText(view) {
    if (view.status === "queued") {
      const parts = [];
      if (view.position) parts.push(`#${view.position} in queue`);
      if (view.estimated_wait_s !== null && view.estimated_wait_s !== undefined) {
        parts.push(`about ${SQ.formatSeconds(view.estimated_wait_s)}`);
      }
      return parts.join(" · ");
    }
    if (view.status === "active" && view.attempts > 1) return `attempt ${view.attempts}`;
    return "";
  }

  function updateEmpty() {
    ui.jobsEmpty.hidden = cards.size > 0;
  }

  const groups = new Map();

  /** A group's grid in the job list: the variants of one submission side by side. */
  function groupGrid(groupId) {
    let grid = groups.get(groupId);
    if (!grid) {
      const item = document.createElement("li");
      item.className = "group";
      item.dataset.groupId = groupId;
      const heading = document.createElement("p");
      heading.className = "group-title muted";
      heading.textContent = "Variants";
      grid = document.createElement("ol");
      grid.className = "group-grid";
      item.append(heading, grid);
      groups.set(groupId, grid);
    }
    return grid;
  }

  /** A job's card, in the list or (a variant) in its group's grid; returns the list item
   * to place: the card, or its group. */
  function addCard(view, { toTop = false } = {}) {
    let card = cards.get(view.job_id);
    if (card) {
      card.update(view);
    } else {
      card = new JobCard(view);
      cards.set(view.job_id, card);
    }
    let placed = card.element;
    if (view.group_id) {
      const grid = groupGrid(view.group_id);
      if (card.element.parentElement !== grid) grid.append(card.element);
      if (toTop) grid.prepend(card.element);
      placed = grid.parentElement;
    }
    if (!placed.parentElement) ui.jobs.append(placed);
    if (toTop) ui.jobs.prepend(placed);
    updateEmpty();
    return card;
  }

  async function loadJobs() {
    let items;
    try {
      ({ body: { items } } = await api(`/v1/jobs?limit=${JOBS_SHOWN}`, { token: token.get() }));
    } catch (error) {
      if (error.status === 401) return expired();
      SQ.toast(`Could not load your jobs: ${error.message}`, "error");
      return;
    }
    const listed = new Set(items.map((view) => view.job_id));
    for (const [jobId, card] of cards) {
      if (!listed.has(jobId)) card.gone();
    }
    for (const view of items) {
      const card = cards.get(view.job_id);
      // A followed job's own stream is newer than this list.
      const element = card && card.tracker && card.tracker.running ? card.element : addCard(view).element;
      ui.jobs.append(view.group_id ? groupGrid(view.group_id).parentElement : element);
    }
    updateEmpty();
  }

  ui.refresh.addEventListener("click", () => loadJobs());

  SQ.watchQueueChip($("#queue-chip"));
  if (token.get()) showStudio();
  else showSignIn();
})();
