// Progressive enhancement for zoo's catalogue: copy buttons on code blocks and a
// confirmation before revoking a key. The pages work without it.
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
