// MEDICODAX dashboard: live refresh for pages marked data-refresh="SECONDS".
// Every page works without this script; it only swaps in a fresh copy of <main>
// while the page is visible and nothing inside it has focus.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main) return;
  var secs = parseInt(main.getAttribute("data-refresh") || "", 10);
  if (!(secs >= 5)) return;
  function busy() {
    var a = document.activeElement;
    return a && a !== document.body && main.contains(a);
  }
  function refresh() {
    if (document.hidden || busy()) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        if (fresh && !busy()) main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes).map(function (n) { return document.importNode(n, true); }));
      })
      .catch(function () {});
  }
  setInterval(refresh, secs * 1000);
})();
