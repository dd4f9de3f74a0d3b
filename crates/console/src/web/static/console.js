// Portcullis console: progressive enhancement only. Every page works without this script;
// with it, lists marked data-live refresh themselves when the server says something changed.
"use strict";

(function () {
  // A region with data-live="<url of its fragment>" and data-events="<SSE url>": refetched on
  // each server-sent "changed" event, and every 10 s should the event stream be down.
  function live(region) {
    var url = region.getAttribute("data-live");
    var status = document.getElementById(region.getAttribute("data-status") || "");
    var busy = false;
    var last = null;
    function refresh() {
      if (busy) return;
      busy = true;
      // Marked as a background refresh: it does not keep an unattended session alive.
      fetch(url, {
        credentials: "same-origin",
        headers: { Accept: "text/html", "X-Portcullis-Background": "1" }
      })
        .then(function (response) {
          return response.text().then(function (html) {
            if (!(response.ok || response.status === 401)) return;
            // Replaced only when it changed: focus and screen readers are left alone otherwise.
            if (html === last) return;
            var first = last === null;
            last = html;
            region.innerHTML = html;
            if (status && !first) {
              var count = region.querySelector("[data-testid=pending-count]");
              status.textContent = response.status === 401
                ? "Your session ended: reload the page to sign in again."
                : "Updated: " + (count ? count.textContent : "0") + " waiting for your decision.";
            }
          });
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    }
    var events = region.getAttribute("data-events");
    if (events && window.EventSource) {
      var source = new EventSource(events);
      source.addEventListener("changed", refresh);
      source.addEventListener("open", refresh);
    }
    setInterval(refresh, 10000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(live);
    if (window.PortcullisPages) {
      window.PortcullisPages.forEach(function (init) { init(); });
    }
  });

  // Pages with their own behaviour register an initialiser here (see the replay below).
  window.PortcullisPages = window.PortcullisPages || [];
})();
