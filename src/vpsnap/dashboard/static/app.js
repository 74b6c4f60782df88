// vpsnap panel: live job updates, the name check and small conveniences. Everything works
// without this file too (forms post, pages reload); it only saves reloads.
"use strict";

(function () {
  const NAME = /^[A-Za-z0-9_-]{1,40}$/;

  function say(text) {
    const status = document.getElementById("live-status");
    if (status) status.textContent = text;
  }

  // -- the snapshot name, checked as you type --------------------------------------------
  function nameCheck() {
    const input = document.getElementById("snap-name");
    const out = document.getElementById("name-check");
    if (!input || !out) return;
    let taken = [];
    try { taken = JSON.parse(input.dataset.taken || "[]").map((n) => n.toLowerCase()); } catch (e) { taken = []; }
    const check = () => {
      const value = input.value;
      let message = "";
      if (value === "") message = "";
      else if (value.length > 40) message = "Too long: at most 40 characters.";
      else if (!NAME.test(value)) message = "Only letters, digits, hyphen (-) and underscore (_), no spaces.";
      else if (taken.includes(value.toLowerCase())) message = "There is a snapshot with this name already (names ignore case).";
      input.setCustomValidity(message);
      if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
      out.textContent = message || (value ? "This name can be used." : "");
      out.className = "check " + (message ? "bad" : value ? "good" : "");
    };
    input.addEventListener("input", check);
    if (input.value) check();
  }

  // -- "expires in" countdowns -----------------------------------------------------------
  function countdown(iso) {
    const seconds = Math.floor((Date.parse(iso) - Date.now()) / 1000);
    if (seconds <= 0) return "due now";
    let minutes = Math.max(Math.floor(seconds / 60), 1);
    const days = Math.floor(minutes / 1440); minutes -= days * 1440;
    const hours = Math.floor(minutes / 60); minutes -= hours * 60;
    if (days) return "in " + days + " d " + hours + " h";
    if (hours) return "in " + hours + " h " + minutes + " min";
    return "in " + minutes + " min";
  }
  function tick() {
    document.querySelectorAll("time[data-countdown]").forEach((el) => {
      el.textContent = countdown(el.getAttribute("datetime"));
    });
  }

  // -- live jobs: Server-Sent Events, polling as the fallback ------------------------------
  let refreshing = null;
  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const response = await fetch(window.location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      document.querySelectorAll("[data-live]").forEach((region) => {
        const fresh = doc.getElementById(region.id);
        if (!fresh) return;
        // Never pull a form from under someone typing in it.
        if (region.hasAttribute("data-keep-focus") && region.contains(document.activeElement) && document.activeElement !== document.body) return;
        region.replaceWith(fresh);
      });
      nameCheck();
      tick();
    })().finally(() => { refreshing = null; });
    return refreshing;
  }

  function activeJobs() {
    const jobs = document.getElementById("jobs-live");
    return jobs ? Number(jobs.dataset.active || "0") : 0;
  }

  function onJob(data) {
    document.querySelectorAll('li[data-job-id="' + data.id + '"]').forEach((item) => {
      item.dataset.jobStatus = data.status;
      item.className = "job job-" + data.status;
      const status = item.querySelector(".job-status");
      if (status) status.textContent = data.statusText;
      if (data.done) {
        const bar = item.querySelector("progress");
        if (bar) bar.remove();
      }
      if (data.errorTitle) {
        let p = item.querySelector(".job-error");
        if (!p) { p = document.createElement("p"); p.className = "job-error"; item.appendChild(p); }
        p.textContent = data.errorTitle + ": " + data.errorDetail;
      }
    });
    if (data.done) {
      say(data.title + ": " + data.statusText + (data.errorTitle ? ". " + data.errorTitle + ": " + data.errorDetail : "."));
      refresh();
    }
  }

  function poll(url) {
    // Fallback: reload the live parts every 2 s while a job is active.
    const timer = setInterval(async () => {
      await refresh();
      if (activeJobs() === 0) clearInterval(timer);
    }, 2000);
  }

  function listen() {
    const layout = document.querySelector("[data-vps-events]");
    if (!layout || Number(layout.dataset.active || "0") === 0) return;
    const url = layout.dataset.vpsEvents;
    if (!("EventSource" in window)) { poll(url); return; }
    const source = new EventSource(url);
    let gotAny = false;
    source.addEventListener("job", (event) => { gotAny = true; onJob(JSON.parse(event.data)); });
    source.addEventListener("idle", () => { source.close(); refresh(); });
    source.onerror = () => {
      // The stream ended or cannot be opened: stop it reconnecting, poll instead.
      source.close();
      if (!gotAny || activeJobs() > 0) poll(url);
    };
  }

  // -- copy a new API key ------------------------------------------------------------------
  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach((button) => {
      button.addEventListener("click", async () => {
        const input = document.getElementById(button.dataset.copy);
        const out = document.getElementById("copy-status");
        try {
          await navigator.clipboard.writeText(input.value);
          if (out) out.textContent = "Copied to the clipboard.";
        } catch (e) {
          input.select();
          if (out) out.textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    nameCheck();
    tick();
    setInterval(tick, 30000);
    listen();
    copyButtons();
  });
})();
