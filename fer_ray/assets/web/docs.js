// Swagger UI from files this app serves (no CDN). Requests, the spec included, carry the API key the
// upload page keeps in this tab's sessionStorage.
"use strict";

const KEY_STORE = "fer_ray.api_key";
const base = document.baseURI.replace(/\/$/, "");

window.ui = SwaggerUIBundle({
  url: base + "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null, // the default badge would call validator.swagger.io
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  requestInterceptor: (req) => {
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) req.headers.Authorization = "Bearer " + key;
    return req;
  },
});
