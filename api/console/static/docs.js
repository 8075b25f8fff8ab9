// The /docs page: Swagger UI on the API's OpenAPI document, all from this origin (the
// page's CSP allows no inline script, hence this file).
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // no badge fetched from a validator elsewhere
    tryItOutEnabled: false,
    persistAuthorization: false,
  });
})();
