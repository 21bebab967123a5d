//! The catalogue's pages, as maud templates.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;
use zoo_api::{
    CreatedKey, Dim, KeyInfo, ListModelsQuery, ModelDetail, ModelList, Scope, Task, TensorSpec, VersionInfo,
};

use super::{Session, TryResult};
use crate::pipeline::task::{self, TryIt};

pub const CSS: &str = include_str!("zoo.css");
pub const JS: &str = include_str!("zoo.js");

fn human_size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    match b {
        b if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1} GiB", b / 1024.0 / 1024.0 / 1024.0),
        b if b >= 1024.0 * 1024.0 => format!("{:.1} MiB", b / 1024.0 / 1024.0),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · zoo" }
                link rel="stylesheet" href="/static/zoo.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" aria-label="zoo: all models" { "zoo" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            a href="/" { "Models" }
                            a href="/docs" { "API docs" }
                            @if s.is_admin() {
                                a href="/keys" { "API keys" }
                            }
                        }
                        div.who {
                            span { "Signed in with key " code { (s.caller.key_id) } }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.claims.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer { "zoo " (env!("CARGO_PKG_VERSION")) " · models served from the registry, no code per model" }
                script src="/static/zoo.js" defer {}
            }
        }
    }
}

pub fn login(next: &str, csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p { "Sign in with an API key. The first start of the server printed an admin key and saved it to "
                    code { "<data-dir>/admin.key" } "." }
                @if let Some(e) = error {
                    p.error role="alert" { (e) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    input type="hidden" name="csrf" value=(csrf);
                    label for="key" { "API key" }
                    input #key type="password" name="key" required autocomplete="current-password" placeholder="zk_…" autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn error(session: Option<&Session>, status: u16, code: &str, message: &str) -> Markup {
    layout(
        "Error",
        session,
        html! {
            section.card {
                h1 { (status) " · " (code) }
                p role="alert" { (message) }
                p { a href="/" { "Back to the models" } }
            }
        },
    )
}

pub fn models(s: &Session, list: &ModelList, q: &ListModelsQuery) -> Markup {
    let formats = ["onnx", "torchscript", "safetensors", "mlflow"];
    let tasks = Task::ALL.map(Task::as_str);
    let filtered = q.q.is_some() || q.format.is_some() || q.task.is_some();
    layout(
        "Models",
        Some(s),
        html! {
            h1 { "Models" }
            form.filters method="get" action="/" role="search" {
                div {
                    label for="q" { "Search" }
                    input #q type="search" name="q" value=[q.q.as_deref()] placeholder="name or description";
                }
                div {
                    label for="format" { "Format" }
                    select #format name="format" {
                        option value="" { "any" }
                        @for f in formats {
                            option value=(f) selected[q.format.map(|x| x.as_str()) == Some(f)] { (f) }
                        }
                    }
                }
                div {
                    label for="task" { "Task" }
                    select #task name="task" {
                        option value="" { "any" }
                        @for t in tasks {
                            option value=(t) selected[q.task.map(|x| x.as_str()) == Some(t)] { (t) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if list.models.is_empty() {
                section.card.empty {
                    @if filtered {
                        p { "No model matches. " a href="/" { "Show all models" } }
                    } @else {
                        h2 { "No models yet" }
                        p { "Deploy one with the zoo CLI:" }
                        pre.copyable { code { "zoo deploy model.onnx --name my-model --version 1" } }
                    }
                }
            } @else {
                div.table-wrap {
                    table.models {
                        caption.visually-hidden { "Models in the registry" }
                        thead { tr { th scope="col" { "Model" } th scope="col" { "Latest" } th scope="col" { "Format" }
                            th scope="col" { "Task" } th scope="col" { "Versions" } th scope="col" { "Size" } th scope="col" { "Updated" } } }
                        tbody {
                            @for m in &list.models {
                                tr {
                                    td {
                                        a.model-link href=(format!("/models/{}", m.name)) { (m.name) }
                                        @if !m.description.is_empty() { div.muted { (m.description) } }
                                    }
                                    td { (m.latest_version.as_deref().unwrap_or("-")) }
                                    td { (m.format.map(|f| f.as_str()).unwrap_or("-")) }
                                    td { (m.task.map(|t| t.as_str()).unwrap_or("-")) }
                                    td.num { (m.version_count) }
                                    td.num { (human_size(m.total_size)) }
                                    td { (when(m.updated_at)) }
                                }
                            }
                        }
                    }
                }
                @if let Some(c) = &list.next_cursor {
                    p { a href=(format!("/?cursor={c}&q={}&format={}&task={}",
                        q.q.as_deref().unwrap_or(""), q.format.map(|f| f.as_str()).unwrap_or(""), q.task.map(|t| t.as_str()).unwrap_or(""))) { "Next page →" } }
                }
            }
        },
    )
}

fn shape(spec: &TensorSpec) -> String {
    match &spec.shape {
        Some(dims) => format!("[{}]", dims.iter().map(Dim::to_string).collect::<Vec<_>>().join(", ")),
        None => "any".into(),
    }
}

/// The text with the entities of a token-classification answer marked (their
/// type and score in the mark's title), or `None` for any other answer.
fn entity_marks(text: &str, body: &str) -> Option<Markup> {
    let entities: Vec<zoo_api::Entity> = serde_json::from_str(body).ok()?;
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let mut parts: Vec<(String, Option<&zoo_api::Entity>)> = Vec::new();
    for e in &entities {
        if e.start < at || e.end < e.start || e.end > chars.len() {
            return None;
        }
        parts.push((chars[at..e.start].iter().collect(), None));
        parts.push((chars[e.start..e.end].iter().collect(), Some(e)));
        at = e.end;
    }
    parts.push((chars[at..].iter().collect(), None));
    Some(html! {
        p.entities #try-entities {
            @for (piece, e) in &parts {
                @match e {
                    Some(e) => mark title=(format!("{} {:.3}", e.entity_group, e.score)) data-entity=(e.entity_group) {
                        (piece) " " small { (e.entity_group) }
                    },
                    None => (piece),
                }
            }
            @if entities.is_empty() { " " span.muted { "(no entities)" } }
        }
    })
}

fn signature_table(title: &str, specs: &[TensorSpec]) -> Markup {
    html! {
        h3 { (title) }
        @if specs.is_empty() {
            p.muted { "none" }
        } @else {
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Shape" } th scope="col" { "As declared" } } }
                    tbody {
                        @for s in specs {
                            tr {
                                td { code { (s.name) } @if s.optional { " " span.badge { "optional" } } }
                                td { (s.dtype.as_str()) }
                                td { code { (shape(s)) } }
                                td { code { (s.type_text) } @if !s.doc.is_empty() { div.muted { (s.doc) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn examples(name: &str, v: &VersionInfo, example: &Value, origin: &str) -> Markup {
    let body = serde_json::to_string(example).unwrap_or_default();
    let url = format!("{origin}/v1/models/{name}/predict");
    let form = task::kind(v.task).try_it(&v.signature);
    let cli = form.cli(name, example);
    let (curl, python) = if form == TryIt::Image {
        // An image model takes the file itself as the body.
        (
            format!(
                "curl -H \"Authorization: Bearer $ZOO_API_KEY\" -H 'content-type: image/jpeg' \\\n  --data-binary @cat.jpg \\\n  {url}"
            ),
            format!(
                "import os, requests\n\nr = requests.post(\n    \"{url}\",\n    headers={{\"Authorization\": f\"Bearer {{os.environ['ZOO_API_KEY']}}\",\n             \"Content-Type\": \"image/jpeg\"}},\n    data=open(\"cat.jpg\", \"rb\").read(),\n)\nprint(r.json())"
            ),
        )
    } else {
        (
            format!(
                "curl -H \"Authorization: Bearer $ZOO_API_KEY\" -H 'content-type: application/json' \\\n  -d '{body}' \\\n  {url}"
            ),
            format!(
                "import os, requests\n\nr = requests.post(\n    \"{url}\",\n    headers={{\"Authorization\": f\"Bearer {{os.environ['ZOO_API_KEY']}}\"}},\n    json={},\n)\nprint(r.json())",
                python_literal(example)
            ),
        )
    };
    html! {
        h2 { "Call it" }
        p { "With a key that has the predict scope for this model in " code { "ZOO_API_KEY" } ":" }
        div.examples {
            figure { figcaption { "zoo CLI" } pre.copyable { code { (cli) } } }
            figure { figcaption { "curl" } pre.copyable { code { (curl) } } }
            figure { figcaption { "Python (requests)" } pre.copyable { code { (python) } } }
        }
    }
}

/// A JSON value written as a Python literal.
fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(a) => format!("[{}]", a.iter().map(python_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", serde_json::to_string(k).unwrap_or_default(), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn model(
    s: &Session,
    m: &ModelDetail,
    chosen: Option<&VersionInfo>,
    example: &Value,
    origin: &str,
    tried: Option<(TryResult, String)>,
    notice: Option<&str>,
) -> Markup {
    let can_deploy = s.caller.has(Scope::Deploy) && s.caller.may_use(&m.name);
    let can_predict = s.caller.has(Scope::Predict) && s.caller.may_use(&m.name);
    layout(
        &m.name,
        Some(s),
        html! {
            nav.crumbs aria-label="Breadcrumb" { a href="/" { "Models" } " / " span { (m.name) } }
            h1 { (m.name) }
            @if !m.description.is_empty() { p.lead { (m.description) } }
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            p { a href=(format!("/models/{}/docs", m.name)) { "API documentation (OpenAPI)" } " · created " (when(m.created_at)) }

            section.card {
                h2 { "Versions" }
                div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Version" } th scope="col" { "Format" } th scope="col" { "Task" } th scope="col" { "Runtime" }
                            th scope="col" { "Status" } th scope="col" { "Size" } th scope="col" { "Warm-up" } th scope="col" { "Created" } } }
                        tbody {
                            @for v in &m.versions {
                                tr.current[chosen.is_some_and(|c| c.version == v.version)] {
                                    td { a href=(format!("/models/{}?version={}", m.name, v.version)) { (v.version) } }
                                    td { (v.format.as_str()) @if v.signature.bundle { " bundle" } }
                                    td { (v.task.as_str()) }
                                    td { (v.runtime.as_deref().unwrap_or("-")) }
                                    td {
                                        @if v.servable {
                                            span.ok { "servable" } @if v.loaded { " · loaded" } @else { " · not loaded" }
                                        } @else {
                                            span.bad { "not servable" } div.muted { (v.reason.as_deref().unwrap_or("")) }
                                        }
                                    }
                                    td.num { (human_size(v.size)) }
                                    td.num { (v.warmup_ms.map(|w| format!("{w:.1} ms")).unwrap_or_else(|| "-".into())) }
                                    td { (when(v.created_at)) div.muted { "by " (v.created_by) } }
                                }
                            }
                        }
                    }
                }
            }

            section.card {
                h2 { "Aliases" }
                @if m.aliases.is_empty() {
                    p.muted { "No aliases: the default route serves the newest version." }
                } @else {
                    ul.aliases {
                        @for (a, v) in &m.aliases { li { code { (a) } " → version " (v) } }
                    }
                }
                @if can_deploy && !m.versions.is_empty() {
                    form.inline method="post" action=(format!("/models/{}/alias", m.name)) {
                        input type="hidden" name="csrf" value=(s.claims.csrf);
                        label for="alias" { "Alias" }
                        input #alias name="alias" value="production" required pattern="[a-z][a-z0-9._-]{0,63}";
                        label for="alias-version" { "points at version" }
                        select #alias-version name="version" {
                            @for v in m.versions.iter().filter(|v| v.servable) { option value=(v.version) { (v.version) } }
                        }
                        button type="submit" { "Move alias" }
                    }
                }
            }

            @if let Some(v) = chosen {
                section.card {
                    h2 { "Version " (v.version) }
                    @if !v.servable {
                        p.error { "Not servable: " (v.reason.as_deref().unwrap_or("no reason recorded")) }
                    }
                    dl.facts {
                        dt { "Format" } dd { (v.format.as_str()) }
                        dt { "Task" } dd { (v.task.as_str()) }
                        dt { "Runtime" } dd { (v.runtime.as_deref().unwrap_or("-")) }
                        dt { "sha256" } dd { code.wrap { (v.sha256) } }
                        dt { "Batching" } dd {
                            @if v.effective.batched && v.effective.max_batch_size > 1 { "up to " (v.effective.max_batch_size) " rows" } @else { "off" }
                            @if !v.effective.measured_batches.is_empty() {
                                " (measured at load: "
                                (v.effective.measured_batches.iter().map(|r| format!("{} rows {:.0}/s", r.batch, r.rows_per_s)).collect::<Vec<_>>().join(", "))
                                ")"
                            }
                        }
                        dt { "Limits" } dd { (v.effective.max_items) " items, " (v.effective.max_tokens) " tokens, " (human_size(v.effective.max_body_bytes as i64)) ", " (v.effective.timeout_secs) " s" }
                    }
                    @if !v.labels.is_empty() {
                        h3 { "Labels" }
                        ul.labels { @for l in &v.labels { li { code { (l) } } } }
                    }
                    (signature_table("Inputs", &v.signature.inputs))
                    (signature_table("Outputs", &v.signature.outputs))
                }
                @if v.servable {
                    section.card { (examples(&m.name, v, example, origin)) }
                    @if can_predict {
                        section.card #try {
                            h2 { "Try it" }
                            @let form = task::kind(v.task).try_it(&v.signature);
                            @let prefill = match &tried {
                                Some((_, input)) => input.clone(),
                                None => form.prefill(example),
                            };
                            @if form == TryIt::Image {
                                form method="post" action=(format!("/models/{}/try-image", m.name)) enctype="multipart/form-data" {
                                    input type="hidden" name="csrf" value=(s.claims.csrf);
                                    input type="hidden" name="version" value=(v.version);
                                    label for="input" { (form.label()) }
                                    input #input type="file" name="image" accept="image/jpeg,image/png" required;
                                    img #preview.preview alt="the chosen image" hidden;
                                    button type="submit" { "Predict" }
                                }
                            } @else if form == TryIt::Chat {
                                // The page's script streams the answers of a conversation
                                // (/models/NAME/chat); without it the form answers one message.
                                div #chat-log.chat aria-live="polite" {}
                                form #chat-form method="post" action=(format!("/models/{}/try", m.name)) data-chat=(format!("/models/{}/chat", m.name)) {
                                    input type="hidden" name="csrf" value=(s.claims.csrf);
                                    input type="hidden" name="version" value=(v.version);
                                    label for="input" { (form.label()) }
                                    textarea #input name="input" rows="3" required { (prefill) }
                                    div.buttons {
                                        button type="submit" { "Send" }
                                        button.secondary #chat-reset type="button" hidden { "New chat" }
                                    }
                                }
                            } @else {
                                form method="post" action=(format!("/models/{}/try", m.name)) {
                                    input type="hidden" name="csrf" value=(s.claims.csrf);
                                    input type="hidden" name="version" value=(v.version);
                                    label for="input" { (form.label()) }
                                    @if form == TryIt::Text {
                                        textarea #input name="input" rows="3" required { (prefill) }
                                    } @else {
                                        textarea #input.code name="input" rows="10" required spellcheck="false" { (prefill) }
                                    }
                                    button type="submit" { "Predict" }
                                }
                            }
                            @if let Some((r, input)) = &tried {
                                div.result role="status" aria-live="polite" {
                                    p {
                                        @if r.status == 200 { span.ok { "200 OK" } } @else { span.bad { (r.status) } }
                                        " · version " (r.version) " · " span.latency { (format!("{:.1} ms", r.millis)) }
                                    }
                                    @if form == TryIt::Image && input.starts_with("data:image/") {
                                        img #tried-image.preview src=(input) alt="the image sent";
                                    }
                                    @if let Some(marked) = entity_marks(input, &r.body) { (marked) }
                                    pre #try-output { code { (r.body) } }
                                }
                            }
                        }
                    }
                }
            } @else {
                section.card { p.muted { "No version is ready to serve." } }
            }
        },
    )
}

pub fn keys(s: &Session, keys: &[KeyInfo], created: Option<&CreatedKey>, error: Option<&str>) -> Markup {
    layout(
        "API keys",
        Some(s),
        html! {
            h1 { "API keys" }
            @if let Some(c) = created {
                section.card.secret role="status" {
                    h2 { "New key " code { (c.info.name) } }
                    p { "Copy the key now: it is shown once and never again (only its hash is stored)." }
                    pre.copyable #new-key { code { (c.key) } }
                }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            section.card {
                h2 { "Create a key" }
                form.stack method="post" action="/keys" {
                    input type="hidden" name="csrf" value=(s.claims.csrf);
                    label for="key-name" { "Name" }
                    input #key-name name="name" required maxlength="200" placeholder="e.g. colleague's notebook";
                    fieldset {
                        legend { "Scopes" }
                        label.check { input type="checkbox" name="scope_read"; " read (list and show models)" }
                        label.check { input type="checkbox" name="scope_predict" checked; " predict" }
                        label.check { input type="checkbox" name="scope_deploy"; " deploy (upload, delete, move aliases)" }
                        label.check { input type="checkbox" name="scope_admin"; " admin (everything, keys too)" }
                    }
                    label for="key-models" { "Models (patterns, comma-separated; empty: all)" }
                    input #key-models name="models" placeholder="text-*, iris";
                    label for="key-days" { "Expires in (days; empty: never)" }
                    input #key-days name="expires_in_days" type="number" min="1" max="3650";
                    button type="submit" { "Create key" }
                }
            }
            section.card {
                h2 { "Keys" }
                div.table-wrap {
                    table.keys {
                        thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Models" }
                            th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "" } } }
                        tbody {
                            @for k in keys {
                                tr.revoked[k.revoked] {
                                    td { code { (k.id) } }
                                    td { (k.name) }
                                    td { (k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) }
                                    td { @if k.models.is_empty() { "all" } @else { (k.models.join(", ")) } }
                                    td { (when(k.created_at)) }
                                    td { (k.expires_at.map(when).unwrap_or_else(|| "never".into())) }
                                    td { (k.last_used_at.map(when).unwrap_or_else(|| "never".into())) }
                                    td {
                                        @if k.revoked {
                                            span.bad { "revoked" }
                                        } @else {
                                            form method="post" action=(format!("/keys/{}/revoke", k.id)) data-confirm="Revoke this key? Everything using it stops working." {
                                                input type="hidden" name="csrf" value=(s.claims.csrf);
                                                button.danger type="submit" aria-label=(format!("Revoke key {}", k.id)) { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (PreEscaped(""))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::entity_marks;

    #[test]
    fn entities_are_marked_in_the_text_by_their_character_offsets() {
        let body = r#"[{"entity_group": "PER", "score": 0.99, "word": "sarah", "start": 11, "end": 16},
                       {"entity_group": "LOC", "score": 0.5, "word": "zürich", "start": 31, "end": 37}]"#;
        let html = entity_marks("My name is Sarah and I live in Zürich!", body).unwrap().into_string();
        assert!(
            html.contains(r#"My name is <mark title="PER 0.990" data-entity="PER">Sarah <small>PER</small></mark>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<mark title="LOC 0.500" data-entity="LOC">Zürich <small>LOC</small></mark>!"#),
            "{html}"
        );
        // No entities; other answers; offsets that do not fit the text.
        assert!(entity_marks("nothing here", "[]").unwrap().into_string().contains("no entities"));
        assert!(entity_marks("good job", r#"[{"label": "POSITIVE", "score": 0.9}]"#).is_none());
        let outside = r#"[{"entity_group": "PER", "score": 0.9, "word": "x", "start": 3, "end": 99}]"#;
        assert!(entity_marks("short", outside).is_none());
    }
}
