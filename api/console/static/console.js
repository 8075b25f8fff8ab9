// Conveyor console: the project's own script (no inline scripts: the CSP forbids them).
// Times in the browser's zone (UTC stays on hover), confirmations, diagrams, job progress.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    el.title = el.getAttribute("datetime");
    el.textContent = at.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }
}

function confirmations(root) {
  for (const form of root.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

async function diagrams(root) {
  const blocks = root.querySelectorAll("pre.mermaid");
  if (!blocks.length || !window.mermaid) return;
  window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
  await window.mermaid.run({ nodes: blocks });
  for (const block of blocks) block.dataset.rendered = "true";
}

function progress(root) {
  for (const el of root.querySelectorAll("[data-poll]")) {
    const url = el.dataset.poll;
    const tick = async () => {
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) return;
      const job = await response.json();
      el.querySelector("[data-done]").textContent = job.done.toLocaleString();
      el.querySelector("[data-total]").textContent = job.total.toLocaleString();
      el.querySelector("[data-status]").textContent = job.status;
      const bar = el.querySelector("progress");
      if (bar) { bar.max = job.total || 1; bar.value = job.done; }
      if (job.status === "running") setTimeout(tick, 1000);
    };
    tick();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  confirmations(document);
  progress(document);
  diagrams(document).catch((error) => console.error("diagram", error));
});
