// The API's reference at /docs (the gateway serves docs.html): Swagger UI from the
// pinned swagger-ui-dist, bundled here and served from our own origin under the same
// Content-Security-Policy as the app, never from a CDN on the origin of the session
// cookie.
import "swagger-ui-dist/swagger-ui.css";
import SwaggerUIBundle from "swagger-ui-dist/swagger-ui-bundle.js";

SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Else it loads a badge from validator.swagger.io.
  validatorUrl: null,
});
