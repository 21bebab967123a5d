// Progressive enhancement for zoo's catalogue: copy buttons on code blocks, a
// confirmation before revoking a key, image previews and a streaming chat box. The
// pages work without it.
document.querySelectorAll("pre.copyable").forEach((pre) => {
  if (!navigator.clipboard) return;
  const b = document.createElement("button");
  b.type = "button";
  b.className = "copy";
  b.textContent = "Copy";
  b.setAttribute("aria-label", "Copy to the clipboard");
  b.addEventListener("click", async () => {
    await navigator.clipboard.writeText(pre.innerText.replace(/\nCopy$/, ""));
    b.textContent = "Copied";
    setTimeout(() => (b.textContent = "Copy"), 1500);
  });
  pre.appendChild(b);
});
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (e) => {
    if (!confirm(form.dataset.confirm)) e.preventDefault();
  });
});
// The image chosen in an image model's try-it form, shown before it is sent.
const picker = document.querySelector("input[type=file][name=image]");
const preview = document.getElementById("preview");
if (picker && preview) {
  picker.addEventListener("change", () => {
    const file = picker.files && picker.files[0];
    if (!file) { preview.hidden = true; return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  });
}
// A text-generation model's chat box: the conversation is sent with each message
// and the answer is shown as it streams (server-sent events of {"text"}).
const chatForm = document.querySelector("form[data-chat]");
const chatLog = document.getElementById("chat-log");
if (chatForm && chatLog && window.fetch && window.TextDecoder) {
  const input = chatForm.querySelector("textarea[name=input]");
  const send = chatForm.querySelector("button[type=submit]");
  const reset = document.getElementById("chat-reset");
  let messages = [];
  const bubble = (role, text) => {
    const d = document.createElement("div");
    d.className = `msg ${role}`;
    d.textContent = text;
    chatLog.appendChild(d);
    return d;
  };
  reset.addEventListener("click", () => {
    messages = [];
    chatLog.replaceChildren();
    reset.hidden = true;
    input.focus();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); chatForm.requestSubmit(); }
  });
  chatForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    messages.push({ role: "user", content: text });
    bubble("user", text);
    input.value = "";
    const answer = bubble("assistant", "");
    answer.setAttribute("aria-busy", "true");
    send.disabled = true;
    reset.hidden = false;
    const body = new URLSearchParams({
      csrf: chatForm.elements.csrf.value,
      version: chatForm.elements.version.value,
      messages: JSON.stringify(messages),
    });
    try {
      const r = await fetch(chatForm.dataset.chat, { method: "POST", body, headers: { accept: "text/event-stream" } });
      if (!r.ok || !(r.headers.get("content-type") || "").startsWith("text/event-stream")) {
        let why = `${r.status} ${r.statusText}`;
        try { why = (await r.json()).error; } catch (_) { /* not JSON */ }
        throw new Error(why);
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          const event = pending.slice(0, end);
          pending = pending.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const d = JSON.parse(line.slice(5));
            if (d.error) throw new Error(d.error);
            if (d.text) answer.textContent += d.text;
            if (d.finish_reason) answer.dataset.finish = d.finish_reason;
          }
        }
      }
      messages.push({ role: "assistant", content: answer.textContent });
    } catch (err) {
      messages.pop();
      answer.classList.add("error");
      answer.textContent = String(err.message || err);
    } finally {
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      input.focus();
    }
  });
}
