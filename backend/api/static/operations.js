// The artist page's operations (issue 18): the picker, which fields each operation takes,
// its image inputs (upload, drag and drop, or a finished job), and the body it sends.
// Kept apart from artist.js, which calls SQ.operations.body() and .useJob().
"use strict";

(() => {
  const SQ = window.SQ;
  const { h } = SQ;

  const STYLE = ["outline", "shading", "detail", "view", "direction", "isometric", "no_background"];
  // For each operation: the shared form fields it takes (by data-field), its own extra
  // controls, its image inputs [field, label, required] and the size rule it states.
  // The API stays the one validator; these only keep the form to what each one accepts.
  const OPERATIONS = {
    pixflux: {
      label: "Generate",
      fields: ["description", "image_size", ...STYLE, "text_guidance_scale", "seed"],
      images: [["init_image", "Starting image", false], ["color_image", "Palette image", false]],
      sizes: "Each side 16–400; area from 32×32 to 400×400",
    },
    bitforge: {
      label: "In a style",
      fields: ["description", "image_size", ...STYLE, "text_guidance_scale", "seed", "style_strength"],
      images: [["style_image", "Style image", false], ["init_image", "Starting image", false]],
      sizes: "Each side 16–200",
    },
    rotate: {
      label: "Rotate",
      fields: ["image_size", "seed", "from_direction", "to_direction"],
      images: [["from_image", "Image to rotate", true]],
      sizes: "Square: 16, 32, 64 or 128",
    },
    animate_with_text: {
      label: "Animate (text)",
      fields: ["description", "action", "image_size", "view", "direction", "n_frames", "seed"],
      images: [["reference_image", "Character", true]],
      sizes: "64×64 only",
    },
    animate_with_skeleton: {
      label: "Animate (skeleton)",
      fields: ["image_size", "view", "direction", "isometric", "seed"],
      images: [["reference_image", "Character", true]],
      sizes: "Square: 16 to 256",
    },
    inpaint: {
      label: "Inpaint",
      fields: ["description", "image_size", ...STYLE, "seed"],
      images: [["inpainting_image", "Image", true], ["mask_image", "Mask (white is redrawn)", true]],
      sizes: "Each side 16–200",
    },
  };
  // The picker itself, our own per-job timeout, and the queue options every operation takes.
  const ALWAYS = ["operation", "timeout_s", "variants", "priority", "callback_url"];
  const DIRECTIONS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"];

  const $ = (selector) => document.querySelector(selector);
  const panel = $("#operation-panel");
  if (!panel) return;
  const form = panel.closest("form");
  const picker = $("#operation");
  const imagesBox = $("#operation-images");
  const sizeHint = $("#size-hint");
  const slots = new Map(); // field -> {element, value, url}

  // ---- the operation's own controls ---------------------------------------------------------

  function field(name, label, control, hint = "") {
    return h(
      "div",
      { class: "field", dataset: { field: name, operationField: "true" } },
      h("label", { for: control.id, text: label }),
      control,
      hint ? h("div", { class: "hint" }, h("span", { text: hint })) : null,
      h("ul", { class: "field-error" }),
    );
  }

  function directionSelect(id, path) {
    return h(
      "select",
      { id, dataset: { path } },
      h("option", { value: "", text: "Default" }),
      ...DIRECTIONS.map((value) => h("option", { value, text: value })),
    );
  }

  const extras = {
    action: field("action", "Action", h("input", { id: "action", type: "text", maxlength: 500, placeholder: "walking", dataset: { path: "action" } }), "What the character does (1–500 characters)"),
    n_frames: field("n_frames", "Frames", h("input", { id: "n-frames", type: "number", min: 2, max: 20, step: 1, placeholder: "4", dataset: { path: "n_frames" } }), "2–20"),
    from_direction: field("from_direction", "From direction", directionSelect("from-direction", "from_direction")),
    to_direction: field("to_direction", "To direction", directionSelect("to-direction", "to_direction")),
    style_strength: field("style_strength", "Style strength", h("input", { id: "style-strength", type: "number", min: 0, max: 100, step: 1, placeholder: "0", dataset: { path: "style_strength" } }), "0–100"),
  };
  const extrasBox = h("div", { class: "grid-3 operation-extras" }, ...Object.values(extras));
  panel.append(extrasBox);

  function extraValue(name) {
    const control = extras[name].querySelector("input, select");
    const raw = control.value.trim();
    if (raw === "") return undefined;
    if (control.type === "number") return Number(raw);
    return raw;
  }

  // ---- image inputs -------------------------------------------------------------------------

  function describe(value) {
    if (!value) return "Drop a PNG here or choose a file";
    if (value.type === "job") return `Result of job ${value.job_id.slice(0, 8)}…`;
    return value.name || "Uploaded PNG";
  }

  function setSlot(name, value, previewUrl = null) {
    const slot = slots.get(name);
    if (!slot) return;
    if (slot.ownUrl) URL.revokeObjectURL(slot.ownUrl);
    slot.ownUrl = value && value.type === "base64" ? previewUrl : null;
    slot.value = value;
    slot.element.dataset.filled = value ? value.type : "";
    slot.caption.textContent = describe(value);
    slot.preview.hidden = !previewUrl;
    if (previewUrl) slot.preview.src = previewUrl;
    else slot.preview.removeAttribute("src");
    slot.clear.hidden = !value;
  }

  /** A dropped or chosen file, read as base64 (the API takes a data: URL as is). */
  function readFile(name, file) {
    if (!file) return;
    if (file.type && file.type !== "image/png") {
      SQ.toast("Images must be PNG files.", "error");
      return;
    }
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      // A blob: URL for the preview, since the CSP allows no data: images.
      setSlot(name, { type: "base64", base64: reader.result, name: file.name }, URL.createObjectURL(file));
    });
    reader.addEventListener("error", () => SQ.toast(`Could not read ${file.name}.`, "error"));
    reader.readAsDataURL(file);
  }

  function buildSlot(name, label, required) {
    const input = h("input", { type: "file", accept: "image/png", id: `image-${name}`, class: "file-input" });
    const caption = h("span", { class: "drop-caption" });
    const preview = h("img", { class: "drop-preview", alt: "", hidden: true });
    const clear = h("button", { type: "button", class: "button ghost small", text: "Clear", hidden: true });
    const zone = h("label", { class: "drop-zone", for: input.id }, preview, caption);
    const element = h(
      "div",
      { class: "field image-slot", dataset: { field: name, image: name } },
      h("span", { class: "label", text: required ? label : `${label} (optional)` }),
      zone,
      h("div", { class: "slot-actions" }, input, clear),
      h("ul", { class: "field-error" }),
    );
    const slot = { element, caption, preview, clear, value: null, ownUrl: null, required };
    slots.set(name, slot);
    input.addEventListener("change", () => readFile(name, input.files[0]));
    clear.addEventListener("click", () => {
      input.value = "";
      setSlot(name, null);
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      readFile(name, event.dataTransfer.files[0]);
    });
    setSlot(name, null);
    return element;
  }

  // ---- switching operations -----------------------------------------------------------------

  function current() {
    return OPERATIONS[picker.value] || OPERATIONS.pixflux;
  }

  /** Show the fields the picked operation takes, and its image inputs (values kept by name). */
  function apply() {
    const operation = current();
    const wanted = new Set([...operation.fields, ...ALWAYS]);
    form.querySelectorAll("[data-field]").forEach((container) => {
      if (container.dataset.image) return;
      container.hidden = !wanted.has(container.dataset.field);
    });
    extrasBox.hidden = !Object.keys(extras).some((name) => wanted.has(name));
    const kept = new Map([...slots].map(([name, slot]) => [name, slot]));
    slots.clear();
    imagesBox.replaceChildren(...operation.images.map(([name, label, required]) => buildSlot(name, label, required)));
    for (const [name, old] of kept) {
      if (slots.has(name) && old.value) setSlot(name, old.value, old.preview.getAttribute("src"));
      else if (old.ownUrl) URL.revokeObjectURL(old.ownUrl);
    }
    imagesBox.hidden = operation.images.length === 0;
    if (sizeHint) sizeHint.textContent = operation.sizes;
    panel.dataset.operation = picker.value;
  }

  picker.replaceChildren(...Object.entries(OPERATIONS).map(([value, { label }]) => h("option", { value, text: label })));
  picker.addEventListener("change", apply);
  apply();

  // ---- what artist.js calls ------------------------------------------------------------------

  /** The body for the picked operation, from the shared form's fields (``base``). */
  function body(base) {
    const name = picker.value;
    const operation = current();
    const wanted = new Set([...operation.fields, ...ALWAYS]);
    const out = name === "pixflux" ? {} : { operation: name };
    for (const [key, value] of Object.entries(base)) {
      if (wanted.has(key)) out[key] = value;
    }
    for (const key of Object.keys(extras)) {
      const value = wanted.has(key) ? extraValue(key) : undefined;
      if (value !== undefined) out[key] = value;
    }
    for (const [field, slot] of slots) {
      if (!slot.value) continue;
      const { type, base64, job_id: jobId, frame } = slot.value;
      out[field] = type === "job" ? { type, job_id: jobId, ...(frame ? { frame } : {}) } : { type, base64 };
    }
    return out;
  }

  /**
   * A finished job as the input of the next one: its first required image field, or, for an
   * operation with none, Rotate's. The size follows the job's frame, which inputs must match.
   */
  function useJob(view, previewUrl) {
    if (!current().images.some(([, , required]) => required)) {
      picker.value = "rotate";
      apply();
    }
    const [field] = current().images.find(([, , required]) => required) || current().images[0];
    setSlot(field, { type: "job", job_id: view.job_id }, previewUrl);
    const size = view.result && (view.result.frame_size || view.result);
    if (size) {
      $("#width").value = String(size.width);
      $("#height").value = String(size.height);
    }
    panel.scrollIntoView({ block: "nearest" });
    SQ.toast(`Job ${view.job_id.slice(0, 8)}… is now the ${field.replace(/_/g, " ")}.`, "success");
  }

  /** Picking an operation by name (artist.js, tests). */
  function pick(name) {
    if (!OPERATIONS[name]) return;
    picker.value = name;
    apply();
  }

  SQ.operations = { body, useJob, pick };
})();
