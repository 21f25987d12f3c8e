// The dashboard's only script of its own (the CSP allows no inline script).
// Copy buttons, confirmations of forms marked data-confirm, and the latency plots.
"use strict";

document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field) return;
  field.select();
  var done = function () { button.textContent = "Copied"; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

document.addEventListener("submit", function (event) {
  var form = event.target;
  // The button pressed may ask its own question (forms with several actions).
  var button = event.submitter;
  var question = (button && button.getAttribute("data-confirm")) || (form.getAttribute && form.getAttribute("data-confirm"));
  if (question && !window.confirm(question)) event.preventDefault();
});

function latencyPlots() {
  var box = document.getElementById("latency");
  if (!box || typeof uPlot === "undefined") return;
  fetch(box.getAttribute("data-source"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(function (data) {
      var summary = document.getElementById("latency-summary");
      summary.textContent = data.alerts + " alert(s) in this window; points are " + data.bucket_s + " s buckets.";
      if (!data.x.length) { summary.textContent = "No alerts in this window."; return; }
      var width = Math.max(300, Math.min(box.clientWidth, 960));
      var palette = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777"];
      var ms = function (u, v) { return v == null ? "" : v.toFixed(1) + " ms"; };
      var axes = [{}, {label: "ms", size: 50}];
      var scales = {x: {time: true, range: [data.from, data.to]}, y: {range: function (u, min, max) { return [0, Math.max(1, max) * 1.1]; }}};
      new uPlot({width: width, height: 220, axes: axes, scales: scales, series: [{},
        {label: "p50", stroke: palette[0], width: 2, value: ms, spanGaps: true},
        {label: "p99", stroke: palette[1], width: 2, value: ms, spanGaps: true}]},
        [data.x, data.answer_p50, data.answer_p99], document.getElementById("plot-answer"));
      var series = [{}], columns = [data.x];
      data.accounts.forEach(function (account, i) {
        series.push({label: account, stroke: palette[i % palette.length], width: 2, value: ms, spanGaps: true});
        columns.push(data.round_trip_p50[account]);
      });
      new uPlot({width: width, height: 220, axes: axes, scales: scales, series: series}, columns,
                document.getElementById("plot-round-trip"));
    })
    .catch(function (error) {
      document.getElementById("latency-summary").textContent = "Could not load the latency data: " + error.message;
    });
}

document.addEventListener("DOMContentLoaded", latencyPlots);
