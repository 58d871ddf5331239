// Show every <time datetime="...Z"> in the steward's own time zone, with the zone named.
// Without this script the pages show UTC, labelled as such.
(function () {
  "use strict";
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
  var format;
  try {
    format = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
  } catch (e) { return; }
  function run() {
    document.querySelectorAll("time[data-local]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      el.title = el.textContent;  // the UTC original, on hover
      el.textContent = format.format(moment);
    });
    if (zone) {
      document.querySelectorAll("[data-zone]").forEach(function (el) {
        el.textContent = "your local time, " + zone;
      });
    }
    // the audit log's time filters are typed in local time: tell the server the offset
    document.querySelectorAll("input[data-tz-offset]").forEach(function (el) {
      el.value = String(-new Date().getTimezoneOffset());
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
