// Starts Swagger UI on /docs. A file, not an inline script, so the page's CSP allows
// scripts from this origin only. validatorUrl null: Swagger UI would otherwise send the
// document to an online validator. BaseLayout: no top bar, whose URL box invites loading
// documents from elsewhere.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  displayRequestDuration: true,
});
