// The dashboard's only script. Pages work without it; with it they follow the detector live:
// an EventSource on /events, and on each incident, verdict or action the open page is fetched
// again and its sections marked data-live are swapped in place (at most once a second).
// Also the copy buttons: navigator.clipboard, or a selected textarea where that is unavailable.
(function () {
  "use strict";
  var pending = null;
  var say = function (text) {
    var status = document.getElementById("live-status");
    if (status) { status.textContent = text; }
  };
  var state = function (text) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; }
  };

  function refresh() {
    pending = null;
    fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          var next = fresh.getElementById(old.id);
          if (!next || next.innerHTML === old.innerHTML) { return; }
          // Keep the keyboard focus where it was when the element survives the swap.
          var focused = document.activeElement && old.contains(document.activeElement) ?
            document.activeElement.getAttribute("href") : null;
          old.innerHTML = next.innerHTML;
          old.classList.remove("flash"); void old.offsetWidth; old.classList.add("flash");
          if (focused) {
            var again = old.querySelector('[href="' + CSS.escape(focused) + '"]');
            if (again) { again.focus(); }
          }
        });
      })
      .catch(function () { /* the next event tries again */ });
  }

  function schedule() { if (!pending) { pending = setTimeout(refresh, 1000); } }

  function describe(kind, data) {
    var where = [data.namespace, data.deployment].filter(Boolean).join("/");
    if (kind === "incident") { return "New incident" + (data.priority ? " (" + data.priority + ")" : "") + ": " + where; }
    if (kind === "verdict") { return "Rollout " + where + " rev " + data.revision + ": " + String(data.verdict).replace("_", " "); }
    if (kind === "action") { return "Action " + data.decision + ": " + data.action + " " + data.target; }
    return "";
  }

  if (window.EventSource) {
    var source = new EventSource("/events");
    source.onopen = function () { state("on"); };
    source.onerror = function () { state("reconnecting…"); };
    ["incident", "verdict", "action"].forEach(function (kind) {
      source.addEventListener(kind, function (event) {
        var data = {};
        try { data = JSON.parse(event.data); } catch (e) { /* keep {} */ }
        say(describe(kind, data));
        schedule();
      });
    });
  } else {
    state("off (reload to update)");
  }

  function copied(button, ok) {
    var status = button.parentNode.querySelector(".copy-status");
    if (status) { status.textContent = ok ? "✔ Copied" : "✖ Select the command and copy it"; }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.copy") : null;
    if (!button) { return; }
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button, true); },
        function () { copied(button, fallback(text)); });
    } else {
      copied(button, fallback(text));
    }
  });

  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed"; area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
}());
