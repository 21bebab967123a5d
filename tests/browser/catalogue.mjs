// zoo's web catalogue in Debian's headless Chromium, as a new user would use it:
// sign in with the admin key, find the text classifier, try it (and an image
// model with a file, and chat with a text generator), create a
// predict-only key for a colleague (and see it work), revoke it, sign out; then a
// user without the admin scope sees no key management and gets 403 from it.
//
// node catalogue.mjs URL ADMIN_KEY READER_KEY SCREENSHOT_DIR
// Prints one "ok: ..." line per check; exits 1 on the first failure.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, adminKey, readerKey, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());

  // Signed out: every page leads to the sign-in form.
  await page.goto(`${url}/`);
  check(page.url().includes("/login"), "a signed-out visit goes to the sign-in page");
  await page.fill("#key", "zk_000000000000_" + "0".repeat(64));
  await page.click("button[type=submit]");
  check((await page.textContent("[role=alert]")).includes("not valid"), "a wrong key is refused with a message");
  await page.screenshot({ path: `${shots}/login.png` });

  // Sign in with the admin key; the model list.
  await page.fill("#key", adminKey);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  check((await page.textContent("h1")).trim() === "Models", "signed in, on the model list");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "zoo_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(await page.isVisible("a.model-link:text-is('text-classifier')"), "the text classifier is listed");
  check(await page.isVisible("nav >> text=API keys"), "an admin sees key management");
  await page.screenshot({ path: `${shots}/models.png`, fullPage: true });

  // Search and filter.
  await page.fill("#q", "classifier");
  await Promise.all([page.waitForNavigation(), page.click("form.filters button")]);
  check(await page.isVisible("a.model-link:text-is('text-classifier')") && !(await page.isVisible("a.model-link:text-is('mlp')")), "search narrows the list");
  await page.selectOption("#format", "onnx");
  await page.fill("#q", "");
  await Promise.all([page.waitForNavigation(), page.click("form.filters button")]);
  check(await page.isVisible("a.model-link:text-is('mlp')"), "the format filter keeps ONNX models");

  // The model page: versions, signature, labels, examples, docs link.
  await Promise.all([page.waitForNavigation(), page.click("a.model-link:text-is('text-classifier')")]);
  check((await page.textContent("h1")).trim() === "text-classifier", "the model page opens");
  const text = await page.textContent("main");
  check(text.includes("text-classification") && text.includes("POSITIVE") && text.includes("NEGATIVE"), "task and labels are shown");
  check(text.includes("input_ids") && text.includes("int64"), "the signature table names the inputs and their types");
  check(text.includes("zoo predict text-classifier") && text.includes("curl -H") && text.includes("import os, requests"), "CLI, curl and Python examples for this model");
  check(await page.isVisible("a[href='/models/text-classifier/docs']"), "a link to the model's API docs");
  await page.screenshot({ path: `${shots}/model.png`, fullPage: true });

  // Try it: the form calls the real predict endpoint.
  await page.fill("#input", "good job");
  await Promise.all([page.waitForNavigation(), page.click("#try button[type=submit]")]);
  const out = await page.textContent("#try-output");
  check(out.includes('"label": "POSITIVE"'), "try it answers with the label");
  check(/\d+\.\d ms/.test(await page.textContent(".latency")), "and its latency");
  await page.screenshot({ path: `${shots}/try.png`, fullPage: true });

  // An admin moves an alias from the model page; the API sees the move.
  await page.goto(`${url}/models/text-classifier`);
  await page.fill("#alias", "staging");
  await page.selectOption("#alias-version", "1");
  await Promise.all([page.waitForNavigation(), page.click("button:text-is('Move alias')")]);
  check((await page.textContent("ul.aliases")).includes("staging → version 1"), "an alias moved from the page is shown");
  const aliases = await page.evaluate(async () => (await (await fetch("/v1/models/text-classifier/aliases")).json()).aliases);
  check(aliases.staging === "1", "and the API routes it");

  // A tensor model's try-it is a JSON editor prefilled with an example request.
  await page.goto(`${url}/models/mlp`);
  check((await page.inputValue("#input")).includes('"inputs"'), "a tensor model's JSON editor is prefilled");
  await Promise.all([page.waitForNavigation(), page.click("#try button[type=submit]")]);
  check((await page.textContent("#try-output")).includes('"outputs"'), "try it on a tensor model");

  // An image model's try-it is a file picker: the chosen image is shown, sent, and
  // shown again next to its labels.
  await page.goto(`${url}/models/vit`);
  check(await page.isVisible("#try input[type=file][name=image]"), "an image model's try-it is a file picker");
  const vitPage = await page.textContent("main");
  check(vitPage.includes("zoo predict vit --file cat.jpg") && vitPage.includes("--data-binary @cat.jpg"), "with the CLI and curl lines that send a file");
  check(!(await page.isVisible("#preview")), "no preview before an image is chosen");
  const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAKUlEQVR42g3HMQEAAAzCMIRVGGdFIXDLlyQSGxcTBIvjU6mt62cyOzcPp2MTQQYaK1UAAAAASUVORK5CYII=", "base64");
  await page.setInputFiles("#input", { name: "cat.png", mimeType: "image/png", buffer: png });
  check(await page.isVisible("#preview"), "the chosen image is shown before it is sent");
  await Promise.all([page.waitForNavigation(), page.click("#try button[type=submit]")]);
  const labels = await page.textContent("#try-output");
  check(labels.includes('"label": "cat"') || labels.includes('"label": "dog"') || labels.includes('"label": "bird"'), "try it answers an image with its labels");
  check(await page.isVisible("#tried-image"), "and shows the image it sent");
  await page.screenshot({ path: `${shots}/try-image.png`, fullPage: true });

  // A text-generation model's try-it is a chat box: the answer streams into the
  // page, a second message continues the conversation, "New chat" starts over.
  await page.goto(`${url}/models/tiny-chat`);
  check(await page.isVisible("#chat-form textarea[name=input]"), "a generator's try-it is a chat box");
  await page.fill("#chat-form textarea[name=input]", "Hello there");
  await page.click("#chat-form button[type=submit]");
  await page.waitForSelector("#chat-log .msg.assistant[data-finish]", { timeout: 30000 });
  const first = await page.textContent("#chat-log .msg.assistant");
  check(first.length > 0 && !(await page.isVisible("#chat-log .msg.error")), "the answer streams into the chat");
  check((await page.textContent("#chat-log .msg.user")) === "Hello there", "with the message it answers");
  await page.fill("#chat-form textarea[name=input]", "And again");
  await page.press("#chat-form textarea[name=input]", "Enter");
  await page.waitForFunction(() => document.querySelectorAll("#chat-log .msg.assistant[data-finish]").length === 2, null, { timeout: 30000 });
  check((await page.$$("#chat-log .msg")).length === 4, "Enter sends a second message in the same conversation");
  await page.screenshot({ path: `${shots}/chat.png`, fullPage: true });
  await page.click("#chat-reset");
  check((await page.$$("#chat-log .msg")).length === 0, "New chat empties the conversation");

  // The API docs page renders the model's own OpenAPI in Swagger UI.
  await page.goto(`${url}/models/text-classifier/docs`);
  await page.waitForSelector(".swagger-ui .info .title", { timeout: 15000 });
  check((await page.textContent(".swagger-ui .info .title")).includes("text-classifier"), "Swagger UI shows the model's own API, with the session");
  await page.screenshot({ path: `${shots}/docs.png` });

  // Keys: create a predict-only key for a colleague; the secret is shown once.
  await page.goto(`${url}/keys`);
  await page.fill("#key-name", "colleague");
  await page.fill("#key-models", "text-*");
  await Promise.all([page.waitForNavigation(), page.click("form.stack button[type=submit]")]);
  const secret = (await page.textContent("#new-key code")).trim();
  check(/^zk_[0-9a-f]{12}_[0-9a-f]{64}$/.test(secret), "the new key is shown once");
  await page.screenshot({ path: `${shots}/keys.png`, fullPage: true });
  const id = secret.split("_")[1];
  await page.reload();
  check(!(await page.textContent("main")).includes(secret), "the secret is not shown again");
  const call = (key, path, body) => fetch(`${url}${path}`, {
    method: body ? "POST" : "GET",
    headers: { Authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  check((await call(secret, "/v1/models/text-classifier/predict", { inputs: "good job" })).status === 200, "the colleague's key predicts");
  check((await call(secret, "/v1/models")).status === 403, "but cannot list models (no read scope)");
  check((await call(secret, "/v1/models/mlp/predict", { inputs: { x: [[1, 2, 3, 4]] } })).status === 403, "nor use other models");

  // Revoke it.
  await Promise.all([page.waitForNavigation(), page.click(`button[aria-label='Revoke key ${id}']`)]);
  check((await page.textContent(`tr:has(code:text-is('${id}'))`)).includes("revoked"), "the key is shown revoked");
  check((await call(secret, "/v1/models/text-classifier/predict", { inputs: "good job" })).status === 401, "and stops working");

  // A state-changing call with the session but without its CSRF token is refused.
  const csrfless = await page.evaluate(async () => (await fetch("/v1/keys", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "x", scopes: ["admin"] }) })).status);
  check(csrfless === 403, "the session cannot change state without its CSRF token");

  // Sign out.
  await Promise.all([page.waitForNavigation(), page.click("text=Sign out")]);
  check(page.url().includes("/login"), "signed out");
  await page.goto(`${url}/keys`);
  check(page.url().includes("/login"), "pages need a session again");

  // A user without the admin scope: no key management, 403 from its routes.
  const reader = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const rp = await reader.newPage();
  await rp.goto(`${url}/login`);
  await rp.fill("#key", readerKey);
  await Promise.all([rp.waitForNavigation(), rp.click("button[type=submit]")]);
  check((await rp.textContent("h1")).trim() === "Models", "a reader signs in");
  check(!(await rp.isVisible("nav >> text=API keys")), "a reader sees no key management");
  const r = await rp.goto(`${url}/keys`);
  check(r.status() === 403, "a reader gets 403 from the keys page");
  const api = await rp.evaluate(async () => (await fetch("/v1/keys")).status);
  check(api === 403, "and 403 from the keys API");
  await rp.goto(`${url}/models/text-classifier`);
  await rp.screenshot({ path: `${shots}/model-phone.png`, fullPage: true });
  const wide = await rp.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  check(wide, "the model page fits a phone's width");
  console.log("catalogue: all checks passed");
} finally {
  await browser.close();
}
