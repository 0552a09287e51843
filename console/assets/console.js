// eda console: the overview's live refresh, select-all boxes, the tail's
// event stream. The pages work without it, except the live parts.
(function () {
  "use strict";
  function ready(fn) { if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn); }
  ready(function () {
    var live = document.getElementById("live");
    if (live) {
      var every = parseInt(live.dataset.refresh, 10) || 2000;
      var busy = false;
      setInterval(function () {
        if (busy || document.hidden) return;
        busy = true;
        fetch(live.dataset.src, { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
          .then(function (html) { live.innerHTML = html; live.dataset.updated = String(Date.now()); })
          .catch(function () {})
          .finally(function () { busy = false; });
      }, every);
    }
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll("input.pick").forEach(function (b) { b.checked = all.checked; });
      });
    }
    var status = document.getElementById("tail-status");
    if (status && window.EventSource) {
      var body = document.querySelector("#tail tbody");
      var es = new EventSource(status.dataset.src);
      es.addEventListener("ready", function (e) {
        var d = JSON.parse(e.data);
        status.textContent = "watching " + d.what + " (temporary queue " + d.temp + ")";
        status.className = "ok";
      });
      es.addEventListener("message", function (e) {
        var ev = JSON.parse(e.data);
        var tr = document.createElement("tr");
        tr.className = "event";
        [ev.time, ev.type, ev.id, ev.correlation || ""].forEach(function (v) {
          var td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
        });
        var td = document.createElement("td");
        var det = document.createElement("details");
        var sum = document.createElement("summary"); sum.textContent = "payload";
        var pre = document.createElement("pre"); pre.className = "payload"; pre.textContent = ev.pretty;
        det.appendChild(sum); det.appendChild(pre); td.appendChild(det); tr.appendChild(td);
        body.insertBefore(tr, body.firstChild);
        while (body.children.length > 500) body.removeChild(body.lastChild);
      });
      es.onerror = function () { status.textContent = "disconnected; retrying…"; status.className = "error"; };
    }
  });
})();
