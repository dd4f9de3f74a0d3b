// Portcullis console: the replay of a recorded session. Without this script the whole
// timeline is shown; with it, "Replay" hides the timeline's steps and shows them again one by
// one, spaced as they were recorded (divided by the chosen speed, never more than a second).
"use strict";

(window.PortcullisPages = window.PortcullisPages || []).push(function () {
  var controls = document.getElementById("replay-controls");
  var list = document.getElementById("timeline");
  if (!controls || !list) return;
  var button = controls.querySelector("[data-testid=replay]");
  var speed = document.getElementById("replay-speed");
  var status = document.getElementById("replay-status");
  var steps = Array.prototype.filter.call(list.children, function (el) {
    return el.tagName === "LI";
  });
  var timer = null;
  controls.hidden = false;

  function showAll() {
    steps.forEach(function (li) { li.hidden = false; });
  }

  function stop(message) {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    showAll();
    button.textContent = "Replay";
    status.textContent = message;
  }

  button.addEventListener("click", function () {
    if (timer !== null) {
      stop("Replay stopped: the whole timeline is shown.");
      return;
    }
    if (steps.length === 0) return;
    steps.forEach(function (li) { li.hidden = true; });
    button.textContent = "Stop replay";
    var i = 0;
    function next() {
      var li = steps[i];
      li.hidden = false;
      status.textContent = "Step " + (i + 1) + " of " + steps.length + ": " + li.getAttribute("data-kind");
      i += 1;
      if (i >= steps.length) {
        timer = null;
        stop("Replay finished: " + steps.length + (steps.length === 1 ? " step." : " steps."));
        return;
      }
      var gap = (Number(steps[i].getAttribute("data-offset")) -
        Number(li.getAttribute("data-offset"))) / Number(speed.value || 1);
      if (!(gap > 0)) gap = 0;
      timer = setTimeout(next, Math.min(gap, 1000));
    }
    timer = 0;
    next();
  });
});
