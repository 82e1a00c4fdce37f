// Refresh the states on "My certificates" while a request is in progress, so the
// professional sees submitted → issuing → sent without reloading the page.
(function () {
  "use strict";
  var table = document.querySelector("table[data-status-url]");
  if (!table) { return; }
  var url = table.getAttribute("data-status-url");
  var delay = 2000;
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
        if (data.in_progress) { window.setTimeout(poll, delay); }
        // Done: the serial, the dates and the "Revoke…" link come with the page, so
        // reload once (the cells' classes were just updated, so check what changed).
        else if (changed) { window.location.reload(); }
      })
      .catch(function () { window.setTimeout(poll, delay * 2); });
  }
  if (table.querySelector(".state-submitted, .state-issuing, .state-sending")) {
    window.setTimeout(poll, delay);
  }
})();
