// Refresh the states on "My certificates" while a request is in progress, so the
// professional sees submitted → issuing → sent without reloading the page.
//
// Polling stops after a limit (10 minutes, or the table's data-poll-max-seconds): a
// request takes seconds, one still in progress after that waits for the helpdesk, not
// for this page; and every poll renews the session, so a tab left open must not keep
// it alive for ever (the session's idle timeout, MYCERT_SESSION_SECONDS). Reloading the
// page starts again.
(function () {
  "use strict";
  var table = document.querySelector("table[data-status-url]");
  if (!table) { return; }
  var url = table.getAttribute("data-status-url");
  var delay = 2000;
  var maxDelay = 15000;
  var started = Date.now();
  function maxSeconds() {
    var value = parseFloat(table.getAttribute("data-poll-max-seconds"));
    return isNaN(value) ? 600 : value;
  }
  function later(wait) {
    if ((Date.now() - started) / 1000 >= maxSeconds()) { return; }
    window.setTimeout(poll, wait);
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        var known = true;
        var changed = false;
        data.requests.forEach(function (row) {
          var cell = table.querySelector('[data-request-id="' + row.id + '"]');
          if (!cell) { known = false; return; }
          if (cell.textContent !== row.label) {
            cell.textContent = row.label;
            cell.className = "state state-" + row.state;
            changed = true;
          }
        });
        // A state that needs more than the label (serial, dates): reload once.
        if (!known) { window.location.reload(); return; }
        // Slower as time passes: most requests are done within the first seconds.
        if (data.in_progress) { delay = Math.min(delay * 1.25, maxDelay); later(delay); }
        // Done: the serial, the dates and the "Revoke…" link come with the page, so
        // reload once (the cells' classes were just updated, so check what changed).
        else if (changed) { window.location.reload(); }
      })
      .catch(function () { later(delay * 2); });
  }
  if (table.querySelector(".state-submitted, .state-issuing, .state-sending")) {
    later(delay);
  }
})();
