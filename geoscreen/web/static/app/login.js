// Log in: JSON with the pre-login CSRF token in a header, then go to the review page.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const message = document.getElementById("login-message");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.textContent = "";
    const body = {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    };
    let reply;
    try {
      reply = await fetch("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (err) {
      message.textContent = "The server cannot be reached.";
      return;
    }
    if (reply.ok) {
      window.location.assign("/");
      return;
    }
    const data = await reply.json().catch(() => ({}));
    if (reply.status === 403) {
      message.textContent = "The login form expired: reload the page.";
    } else {
      message.textContent = data.error || "Login failed.";
    }
  });
});
