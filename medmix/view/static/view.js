// medmix view: the only script. It refreshes the overview's figures while the background scan runs.
"use strict";
(function () {
  function poll() {
    var pending = document.getElementById("pending");
    if (!pending) return;
    setTimeout(function () {
      fetch(pending.getAttribute("data-src"), {credentials: "same-origin"})
        .then(function (r) { return r.text(); })
        .then(function (html) {
          // the server renders this fragment with autoescaping; it is parsed, never executed
          var doc = new DOMParser().parseFromString(html, "text/html");
          var box = document.getElementById("figures");
          box.replaceChildren.apply(box, Array.prototype.slice.call(doc.body.childNodes));
          poll();
        })
        .catch(function () { setTimeout(poll, 2000); });
    }, 700);
  }
  document.addEventListener("DOMContentLoaded", poll);
})();
