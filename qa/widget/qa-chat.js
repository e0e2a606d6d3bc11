/* <qa-chat>: a dependency-free chat widget for the qa API, served as-is (no build step).
 * Embed: <script src="https://HOST/widget.js" data-endpoint="https://HOST" defer></script>
 * or place <qa-chat endpoint="https://HOST"></qa-chat> inline. See the README, "Chat widget".
 * `collection`, `key` (a search key: public by design) and `filter` scope what it searches.
 * Anything that comes from the server or a document is written with textContent, never parsed
 * as HTML, and only http(s) URLs become links. The file is ASCII (\u escapes), so it reads the
 * same whatever charset the host page declares. */
(() => {
  "use strict";
  const TAG = "qa-chat";
  const script = document.currentScript;
  // Where this file was loaded from: the default endpoint when none is given.
  const scriptUrl = script && script.src ? script.src : "";
  const ATTRS = ["endpoint", "title", "placeholder", "lang", "k", "open", "timeout", "examples",
    "collection", "key", "filter", "source-links"];
  // Read both as `name` and as `data-name` (the one-tag embed copies data-* onto the element).
  const DATA_ATTRS = ["examples", "collection", "key", "filter", "source-links"];
  const CONTEXT_CHARS = 160;
  const MAX_EXAMPLES = 6;
  // The server's defaults (QA_MAX_QUESTION_CHARS, QA_MAX_K), kept here only so the input stops
  // typing early; the server decides, and its 422 detail is shown if it was configured lower.
  const MAX_QUESTION_CHARS = 1000;
  const MAX_K = 50;

  // {n} and {t} in a string are filled in by fill().
  const STRINGS = {
    en: {
      title: "Ask a question", placeholder: "Ask about these documents\u2026",
      open: "Open chat", closeChat: "Close chat", close: "Close", send: "Send",
      question: "Your question", log: "Conversation", searching: "Searching\u2026",
      cancelled: "Cancelled.", source: "View source", passage: "passage",
      greeting: "Ask a question about these documents.", examples: "Example questions",
      noAnswer: "I couldn\u2019t find this in these documents.", context: "Show the passage",
      more: "More passages", related: "Closest passages ({n})", relatedList: "Related passages",
      found: "Answer found in {t}", notFound: "No answer found in these documents; {n} related passages",
      unreachable: "Could not reach the server. Check your connection and try again.",
      timeout: "The server is taking too long to answer. Please try again.",
      failed: "The server could not answer", noEndpoint: "This widget has no valid endpoint.",
      rate: "Rate this answer", up: "This answer helped", down: "This answer did not help",
      answered: "This answered it", thanks: "Thanks for the feedback",
      unsent: "Your feedback could not be sent.",
    },
    fr: {
      title: "Posez une question", placeholder: "Une question sur ces documents\u2026",
      open: "Ouvrir le chat", closeChat: "Fermer le chat", close: "Fermer", send: "Envoyer",
      question: "Votre question", log: "Conversation", searching: "Recherche\u2026",
      cancelled: "Annul\u00e9.", source: "Voir la source", passage: "passage",
      greeting: "Posez une question sur ces documents.", examples: "Exemples de questions",
      noAnswer: "Je n\u2019ai pas trouv\u00e9 la r\u00e9ponse dans ces documents.",
      context: "Voir le passage", more: "Autres passages", related: "Passages proches ({n})",
      relatedList: "Passages proches", found: "R\u00e9ponse trouv\u00e9e dans {t}",
      notFound: "Pas de r\u00e9ponse dans ces documents\u00a0; {n} passages proches",
      unreachable: "Serveur injoignable. V\u00e9rifiez votre connexion et r\u00e9essayez.",
      timeout: "Le serveur met trop de temps \u00e0 r\u00e9pondre. R\u00e9essayez.",
      failed: "Le serveur n\u2019a pas pu r\u00e9pondre", noEndpoint: "Ce widget n\u2019a pas d\u2019adresse valide.",
      rate: "\u00c9valuer cette r\u00e9ponse", up: "Cette r\u00e9ponse m\u2019a aid\u00e9",
      down: "Cette r\u00e9ponse ne m\u2019a pas aid\u00e9", answered: "C\u2019est la r\u00e9ponse",
      thanks: "Merci pour votre avis", unsent: "Votre avis n\u2019a pas pu \u00eatre envoy\u00e9.",
    },
    de: {
      title: "Stellen Sie eine Frage", placeholder: "Frage zu diesen Dokumenten\u2026",
      open: "Chat \u00f6ffnen", closeChat: "Chat schlie\u00dfen", close: "Schlie\u00dfen",
      send: "Senden", question: "Ihre Frage", log: "Unterhaltung", searching: "Suche\u2026",
      cancelled: "Abgebrochen.", source: "Quelle ansehen", passage: "Stelle",
      greeting: "Stellen Sie eine Frage zu diesen Dokumenten.", examples: "Beispielfragen",
      noAnswer: "Dazu habe ich in diesen Dokumenten nichts gefunden.", context: "Stelle zeigen",
      more: "Weitere Stellen", related: "N\u00e4chste Stellen ({n})", relatedList: "Verwandte Stellen",
      found: "Antwort gefunden in {t}", notFound: "Keine Antwort in diesen Dokumenten; {n} verwandte Stellen",
      unreachable: "Server nicht erreichbar. Bitte Verbindung pr\u00fcfen und erneut versuchen.",
      timeout: "Der Server antwortet zu langsam. Bitte erneut versuchen.",
      failed: "Der Server konnte nicht antworten", noEndpoint: "Dieses Widget hat keine g\u00fcltige Adresse.",
      rate: "Antwort bewerten", up: "Diese Antwort hat geholfen", down: "Diese Antwort hat nicht geholfen",
      answered: "Das war die Antwort", thanks: "Danke f\u00fcr Ihre R\u00fcckmeldung",
      unsent: "Ihre R\u00fcckmeldung konnte nicht gesendet werden.",
    },
  };

  const fill = (text, values) => text.replace(/\{(\w)\}/g, (_, key) => String(values[key]));

  // Focus rings take the colour of the surface they sit on: --_ring is the accent on light
  // surfaces and the accent's foreground inside the header, so each keeps >= 3:1 against it.
  const CSS = `
:host{all:initial;display:block;font:var(--qa-font,14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);color:var(--qa-fg,#1f2328);--_accent:var(--qa-accent,#0b57d0);--_accent-fg:var(--qa-accent-fg,#fff);--_border:var(--qa-border,#d0d7de);--_muted:var(--qa-muted,#59636e);--_card:var(--qa-card-bg,#f6f8fa);--_ring:var(--qa-focus-ring,var(--qa-focus,var(--_accent)))}
:host([hidden]){display:none}
:host([floating]){position:fixed;right:var(--qa-offset,16px);bottom:var(--qa-offset,16px);z-index:var(--qa-z-index,2147483000)}
*,*::before,*::after{box-sizing:border-box}
button,summary{font:inherit;cursor:pointer}
.launcher{display:grid;place-items:center;width:56px;height:56px;margin-left:auto;border:0;border-radius:50%;background:var(--_accent);color:var(--_accent-fg);box-shadow:0 4px 14px rgba(0,0,0,.25)}
.launcher svg{width:26px;height:26px;fill:currentColor}
.panel{display:flex;flex-direction:column;width:100%;max-width:var(--qa-width,420px);height:var(--qa-height,540px);margin-top:12px;background:var(--qa-bg,#fff);border:1px solid var(--_border);border-radius:var(--qa-radius,12px);box-shadow:0 10px 32px rgba(0,0,0,.18);overflow:hidden}
:host([floating]) .panel{position:absolute;right:0;bottom:calc(100% + 12px);margin:0;width:min(var(--qa-width,380px),calc(100vw - 2 * var(--qa-offset,16px)));height:min(var(--qa-height,560px),calc(100dvh - 104px))}
[hidden]{display:none!important}
header{display:flex;align-items:center;gap:8px;padding:10px 8px 10px 14px;background:var(--_accent);color:var(--_accent-fg);--_ring:var(--qa-focus-ring-on-accent,var(--_accent-fg))}
h2{flex:1;min-width:0;margin:0;font-size:1.05em;font-weight:600;overflow-wrap:anywhere}
h3{margin:4px 0 0;font-size:.86em;font-weight:600;color:var(--_muted)}
.close{width:32px;height:32px;border:0;border-radius:6px;background:transparent;color:inherit;font-size:22px;line-height:1}
.close:hover{background:rgba(255,255,255,.18)}
.log{position:relative;flex:1;display:flex;flex-direction:column;gap:14px;padding:14px;overflow:hidden auto;overscroll-behavior:contain}
.log:focus-visible{outline-offset:-2px}
.turn,.greeting{display:flex;flex-direction:column;gap:8px;min-width:0}
.greeting p{margin:0;color:var(--_muted)}
.q{align-self:flex-end;max-width:88%;margin:0;padding:8px 12px;border-radius:14px 14px 4px 14px;background:var(--_accent);color:var(--_accent-fg);overflow-wrap:anywhere}
ol,ul{display:grid;gap:8px;margin:0;padding:0;list-style:none}
.ex{justify-items:start}
.ex button{padding:6px 12px;border:1px solid var(--_accent);border-radius:14px;background:transparent;color:var(--_accent);text-align:start;overflow-wrap:anywhere}
ol>li,.card,.none{min-width:0;padding:10px 12px;border:1px solid var(--_border);border-radius:10px;background:var(--_card)}
.card{border-left:4px solid var(--_accent)}
.answer{margin:0 0 6px;font-weight:600;overflow-wrap:anywhere}
.none{margin:0;font-weight:600}
summary{color:var(--_accent);overflow-wrap:anywhere}
details .text{margin-top:6px}
.text{margin:0 0 6px;overflow-wrap:anywhere}
mark{padding:0 2px;border-radius:3px;background:var(--qa-mark-bg,#ffe58a);color:inherit}
.meta{display:flex;flex-wrap:wrap;align-items:baseline;gap:2px 10px;margin:0;font-size:.86em;color:var(--_muted)}
.meta strong{color:var(--qa-fg,#1f2328);overflow-wrap:anywhere}
a{color:var(--_accent);overflow-wrap:anywhere}
.status,.error{display:flex;align-items:center;gap:8px;margin:0;color:var(--_muted)}
.error{padding:8px 12px;border-radius:8px;background:var(--qa-error-bg,#fdecea);color:var(--qa-error,#a4161a);overflow-wrap:anywhere}
.spinner{flex:none;width:16px;height:16px;border:2px solid currentColor;border-right-color:transparent;border-radius:50%;animation:spin .8s linear infinite}
@keyframes spin{to{transform:rotate(1turn)}}
@media (prefers-reduced-motion:reduce){.spinner{animation-duration:3s}}
form{display:flex;gap:8px;padding:10px;border-top:1px solid var(--_border)}
input{flex:1;min-width:0;padding:9px 12px;border:1px solid var(--_border);border-radius:8px;background:var(--qa-input-bg,#fff);color:inherit;font:inherit}
.send{flex:none;display:grid;place-items:center;width:40px;border:0;border-radius:8px;background:var(--_accent);color:var(--_accent-fg)}
.send svg{width:18px;height:18px;fill:currentColor}
:focus-visible{outline:2px solid var(--_ring);outline-offset:2px}
.fb{display:flex;flex-wrap:wrap;align-items:center;gap:6px}
.fb button,.it{padding:1px 10px;border:1px solid var(--_muted);border-radius:14px;background:transparent;color:inherit}
.fb svg{display:block;width:16px;height:24px;fill:currentColor}
.fb button+button svg{transform:rotate(180deg)}
.it{border-color:var(--_accent);color:var(--_accent)}
button[aria-pressed=true]{border-color:var(--_accent);background:var(--_accent);color:var(--_accent-fg)}
.note{font-size:.86em;color:var(--_muted)}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}`;

  /** createElement with attributes, "text" as textContent and on* as listeners. */
  const h = (tag, props = {}, ...children) => {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value);
    }
    el.append(...children);
    return el;
  };

  const icon = (d) => {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
    return svg;
  };

  /** A URL object if `value` is an http(s) URL (relative ones resolve against the page). */
  const httpUrl = (value) => {
    try {
      const url = new URL(String(value), document.baseURI);
      return url.protocol === "http:" || url.protocol === "https:" ? url : null;
    } catch {
      return null;
    }
  };

  // Server offsets count code points; JS strings count UTF-16 units, so slice by code points.
  const codePoints = (text) => Array.from(String(text || ""));

  const clipStart = (text) => {
    if (text.length <= CONTEXT_CHARS) return text;
    const cut = text.slice(-CONTEXT_CHARS);
    return "\u2026" + cut.slice(Math.max(0, cut.indexOf(" ") + 1));
  };

  const clipEnd = (text) => {
    if (text.length <= CONTEXT_CHARS) return text;
    const cut = text.slice(0, CONTEXT_CHARS);
    return cut.slice(0, Math.max(cut.lastIndexOf(" "), 1)) + "\u2026";
  };

  // Text fragments (https://wicg.github.io/scroll-to-text-fragment/): "-", "," and "&" are the
  // directive's syntax, so they are escaped with everything outside the unreserved characters.
  const fragmentPart = (text) => encodeURIComponent(text)
    .replace(/[-!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const words = (text) => text.split(/\s+/).filter(Boolean);
  // A sentence of more words is matched by its first and last few (textStart,textEnd): a short
  // URL, and a match that survives markup differences in the middle of the sentence.
  const LONG_WORDS = 12;
  const EDGE_WORDS = 4;
  const CONTEXT_WORDS = 3;

  /** `#:~:text=` for the sentence at code points [a, b) of the passage `text`; the words around
   * it become prefix-/-suffix when the sentence may recur (short, or more than once here). */
  const textFragment = (text, a, b) => {
    const sentence = words(text.slice(a, b).join(""));
    if (!sentence.length) return "";
    const joined = sentence.join(" ");
    const flat = words(text.join("")).join(" ");
    const recurs = sentence.length < 5 || flat.indexOf(joined) !== flat.lastIndexOf(joined);
    let directive = sentence.length > LONG_WORDS
      ? `${fragmentPart(sentence.slice(0, EDGE_WORDS).join(" "))},${fragmentPart(sentence.slice(-EDGE_WORDS).join(" "))}`
      : fragmentPart(joined);
    if (recurs) {
      // Only words of the same paragraph: a match may not span a block boundary.
      const before = words(text.slice(0, a).join("").split(/\n\s*\n/).pop()).slice(-CONTEXT_WORDS);
      const after = words(text.slice(b).join("").split(/\n\s*\n/)[0]).slice(0, CONTEXT_WORDS);
      if (before.length) directive = `${fragmentPart(before.join(" "))}-,${directive}`;
      if (after.length) directive += `,-${fragmentPart(after.join(" "))}`;
    }
    return `:~:text=${directive}`;
  };

  class ProblemError extends Error {
    constructor(status, body) {
      const detail = body && (body.detail || body.title);
      super(typeof detail === "string" ? detail : `HTTP ${status}`);
      this.status = status;
    }
  }

  const CHAT_ICON = "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z";
  // A thumb up; the thumb down is the same, turned over by the stylesheet.
  const THUMB_ICON = "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L14.2 1 7.6 7.6A2 2 0 0 0 7 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7c.1-.3.2-.5.2-.8v-2z";
  const CLOSE_ICON = "M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6L19 6.4 17.6 5 12 10.6z";

  /** The site's example questions: a JSON list of non-empty strings, anything else ignored. */
  const parseExamples = (raw) => {
    let list;
    try {
      list = JSON.parse(raw || "[]");
    } catch {
      return [];
    }
    if (!Array.isArray(list)) return [];
    return list.filter((item) => typeof item === "string" && item.trim() && item.length <= MAX_QUESTION_CHARS)
      .map((item) => item.trim()).slice(0, MAX_EXAMPLES);
  };

  /** Whether the passages hold an answer; a server without `answer` counts any passage as one. */
  const verdict = (data) => {
    const answer = data.answer && typeof data.answer === "object" ? data.answer : {};
    const threshold = Number(answer.threshold);
    return {
      found: typeof answer.found === "boolean" ? answer.found : data.passages.length > 0,
      threshold: Number.isFinite(threshold) ? threshold : -Infinity,
    };
  };

  class QAChat extends HTMLElement {
    static get observedAttributes() {
      return [...ATTRS, ...DATA_ATTRS.map((name) => `data-${name}`)];
    }

    constructor() {
      super();
      this._controller = null;
      this._posts = new Set();  // feedback in flight, aborted with the question when removed
      this._examplesKey = null;
      this._warned = new Set();
      const root = this.attachShadow({ mode: "open" });
      this._launcher = h("button", {
        type: "button", class: "launcher", part: "launcher",
        "aria-controls": "panel", "aria-expanded": "false", onclick: () => this.toggle(!this.open),
      });
      this._heading = h("h2", { id: "heading", part: "title" });
      this._close = h("button", { type: "button", class: "close", part: "close", onclick: () => this.toggle(false) },
        h("span", { "aria-hidden": "true", text: "\u00d7" }));
      this._examples = h("ul", { class: "ex", part: "examples" });
      this._hello = h("p", {});
      this._greeting = h("div", { class: "greeting", part: "greeting" }, this._hello, this._examples);
      // Not a live region: the passages are read on demand; _announce says one line per answer.
      this._log = h("div", { class: "log", part: "log", role: "region", tabindex: "0" }, this._greeting);
      this._announcer = h("p", { class: "sr", part: "announcer", role: "status" });
      this._label = h("label", { for: "input", class: "sr" });
      this._input = h("input", {
        id: "input", part: "input", type: "text", autocomplete: "off", enterkeyhint: "send",
        maxlength: String(MAX_QUESTION_CHARS),
      });
      this._send = h("button", { type: "submit", class: "send", part: "send" },
        icon("M3 20.5 21 12 3 3.5 3 10l12 2-12 2z"));
      this._form = h("form", { part: "form", onsubmit: (event) => this._submit(event) },
        this._label, this._input, this._send);
      this._panel = h("section", {
        id: "panel", class: "panel", part: "panel", role: "dialog", "aria-labelledby": "heading",
        hidden: "",
      }, h("header", { part: "header" }, this._heading, this._close), this._log, this._announcer,
      this._form);
      // title="" stops the host's `title` attribute from showing as a tooltip over everything.
      root.append(h("style", { text: CSS }), h("div", { title: "" }, this._launcher, this._panel));
      root.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && this.open) {
          event.preventDefault();
          this.toggle(false);
        }
      });
    }

    /** The API base URL: the attribute, else the origin widget.js came from; "" if invalid. */
    get endpoint() {
      const raw = (this.getAttribute("endpoint") || "").trim();
      const url = raw || scriptUrl ? httpUrl(raw || scriptUrl) : null;
      if (!url) return "";
      return raw ? url.origin + url.pathname.replace(/\/+$/, "") : url.origin;
    }

    set endpoint(value) {
      this.setAttribute("endpoint", value);
    }

    /** Passages to ask for: an integer in 1..MAX_K, or null to use the server's default. */
    get k() {
      const value = Number(this.getAttribute("k"));
      return Number.isInteger(value) && value >= 1 && value <= MAX_K ? value : null;
    }

    set k(value) {
      this.setAttribute("k", String(value));
    }

    /** Milliseconds before a slow answer is given up on: 1000..120000, default 30000. */
    get timeout() {
      const value = Number(this.getAttribute("timeout"));
      return Number.isFinite(value) && value >= 1000 && value <= 120000 ? value : 30000;
    }

    set timeout(value) {
      this.setAttribute("timeout", String(value));
    }

    /** An attribute given as `name` or `data-name`, the first wins; null when neither is. */
    _attr(name) {
      return this.getAttribute(name) ?? this.getAttribute(`data-${name}`);
    }

    /** Example questions the greeting offers (`examples` or `data-examples`, a JSON list). */
    get examples() {
      return parseExamples(this._attr("examples"));
    }

    set examples(value) {
      this.setAttribute("examples", JSON.stringify(value));
    }

    /** The collection asked, or null for the server's `default` (today's routes). */
    get collection() {
      const name = (this._attr("collection") || "").trim();
      return name && name !== "default" ? name : null;
    }

    set collection(value) {
      this.setAttribute("collection", value);
    }

    /** A search key sent as `Authorization: Bearer`; anyone can read it from the page. */
    get key() {
      const key = (this._attr("key") || "").trim();
      if (!key || /^[\x21-\x7e]+$/.test(key)) return key;
      this._warn("key", "is not an API key (printable ASCII); asking without it");
      return "";
    }

    set key(value) {
      this.setAttribute("key", value);
    }

    /** Where "View source" goes: "page", the document's own http(s) `url` at the sentence (a
     * text fragment), or "local", the API's /source page; "page" also when there is no url. */
    get sourceLinks() {
      const raw = (this._attr("source-links") || "").trim().toLowerCase();
      if (raw === "local" || raw === "page") return raw;
      if (raw) this._warn("source-links", "is neither \"page\" nor \"local\"; using \"page\"");
      return "page";
    }

    set sourceLinks(value) {
      this.setAttribute("source-links", value);
    }

    /** A JSON object sent as the question's `filter`; anything else is ignored with a warning. */
    get filter() {
      const raw = this._attr("filter");
      if (raw === null || !raw.trim()) return null;
      let value;
      try {
        value = JSON.parse(raw);
      } catch {
        value = null;
      }
      if (value && typeof value === "object" && !Array.isArray(value)) return value;
      this._warn("filter", "is not a JSON object; asking without it");
      return null;
    }

    set filter(value) {
      this.setAttribute("filter", JSON.stringify(value));
    }

    /** A console warning about a bad attribute, once per attribute and value. */
    _warn(name, problem) {
      const seen = `${name}=${this._attr(name)}`;
      if (this._warned.has(seen)) return;
      this._warned.add(seen);
      console.warn(`<${TAG}>: the ${name} attribute ${problem}`);
    }

    /** Where the collection's routes start: the endpoint, or its /collections/{name}. */
    _base(endpoint) {
      const name = this.collection;
      return name ? `${endpoint}/collections/${encodeURIComponent(name)}` : endpoint;
    }

    get open() {
      return this.hasAttribute("open");
    }

    set open(value) {
      this.toggleAttribute("open", Boolean(value));
    }

    // `title` and `lang` stay the standard HTMLElement properties; these read the attributes.
    get heading() {
      return (this.getAttribute("title") || "").trim() || this.strings.title;
    }

    get placeholder() {
      return (this.getAttribute("placeholder") || "").trim() || this.strings.placeholder;
    }

    get locale() {
      const owner = this.closest("[lang]");
      return (owner && owner.getAttribute("lang")) || document.documentElement.lang || "en";
    }

    get strings() {
      return STRINGS[this.locale.toLowerCase().split("-")[0]] || STRINGS.en;
    }

    connectedCallback() {
      this.update();
    }

    disconnectedCallback() {
      if (this._controller) this._controller.abort();
      this._controller = null;
      for (const controller of this._posts) controller.abort();
    }

    attributeChangedCallback() {
      if (this.isConnected) this.update();
    }

    /** Write the configuration into the shadow root; the one place that does. */
    update() {
      const s = this.strings;
      const open = this.open;
      this._heading.textContent = this.heading;
      this._launcher.setAttribute("aria-label", `${open ? s.closeChat : s.open}: ${this.heading}`);
      this._launcher.setAttribute("aria-expanded", String(open));
      this._launcher.replaceChildren(icon(open ? CLOSE_ICON : CHAT_ICON));
      this._close.setAttribute("aria-label", s.close);
      this._send.setAttribute("aria-label", s.send);
      this._label.textContent = s.question;
      this._log.setAttribute("aria-label", s.log);
      this._input.placeholder = this.placeholder;
      this._hello.textContent = s.greeting;
      this._examples.setAttribute("aria-label", s.examples);
      const examples = this.examples;
      // Rebuilt only when the list changes, so a focused example keeps its focus.
      if (JSON.stringify(examples) !== this._examplesKey) {
        this._examplesKey = JSON.stringify(examples);
        this._examples.replaceChildren(...examples.map((question) => h("li", {},
          h("button", { type: "button", part: "example", text: question, onclick: () => {
            this._input.focus();
            this.ask(question);
          } }))));
      }
      this._examples.hidden = !examples.length;
      this._panel.hidden = !open;
    }

    /** Open or close the panel, moving focus to the input or back to the launcher. */
    toggle(open) {
      const wasOpen = this.open;
      this.open = open;
      this.update();
      if (open) this._input.focus();
      else if (wasOpen) this._launcher.focus();
      this.dispatchEvent(new CustomEvent("qa-chat:toggle", {
        bubbles: true, composed: true, detail: { open: Boolean(open) },
      }));
    }

    _submit(event) {
      event.preventDefault();
      const question = this._input.value.trim();
      if (!question) return;
      this._input.value = "";
      this.ask(question);
    }

    /** One short line for screen readers, in the status region outside the log. */
    _announce(text) {
      this._announcer.textContent = text;
    }

    /** Ask the API and render the answer; a newer question cancels the one in flight. */
    async ask(question) {
      if (this._controller) this._controller.abort();
      const controller = new AbortController();
      this._controller = controller;
      const s = this.strings;
      const status = h("p", { class: "status", part: "status" },
        h("span", { class: "spinner", part: "spinner", "aria-hidden": "true" }), s.searching);
      const turn = h("div", { class: "turn", part: "turn" },
        h("p", { class: "q", part: "question", text: question }), status);
      this._greeting.hidden = true;
      this._log.append(turn);
      this._announce(s.searching);
      this._scrollTo(turn);
      const endpoint = this.endpoint;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, this.timeout);
      try {
        if (!endpoint) throw new Error(s.noEndpoint);
        const body = { question };
        if (this.k !== null) body.k = this.k;
        const filter = this.filter;
        if (filter) body.filter = filter;
        const base = this._base(endpoint);
        let response;
        try {
          response = await fetch(`${base}/ask`, {
            method: "POST", mode: "cors", credentials: "omit", signal: controller.signal,
            headers: this._headers(), body: JSON.stringify(body),
          });
        } catch (error) {
          if (controller.signal.aborted) throw error;
          throw new Error(s.unreachable);
        }
        const data = await response.json().catch(() => null);
        if (!response.ok) throw new ProblemError(response.status, data);
        if (!data || !Array.isArray(data.passages)) throw new ProblemError(response.status, null);
        status.replaceWith(...this._renderAnswer(data, base, endpoint));
        this.dispatchEvent(new CustomEvent("qa-chat:answer", {
          bubbles: true, composed: true,
          detail: { question, passages: data.passages, answer: data.answer || null,
            queryId: data.query_id || null },
        }));
      } catch (error) {
        if (controller.signal.aborted && !timedOut) {
          status.replaceWith(h("p", { class: "status", part: "status", text: s.cancelled }));
          return;
        }
        const message = timedOut ? s.timeout
          : error instanceof ProblemError ? `${s.failed} (${error.status}): ${error.message}`
          : error.message;
        this._announce("");
        status.replaceWith(h("p", { class: "error", part: "error", role: "alert", text: message }));
        this.dispatchEvent(new CustomEvent("qa-chat:error", {
          bubbles: true, composed: true, detail: { question, message },
        }));
      } finally {
        clearTimeout(timer);
        if (this._controller === controller) this._controller = null;
        this._scrollTo(turn);
      }
    }

    /** Answer first: the top passage's sentence, then the rest; or a plain "not found". */
    _renderAnswer(data, base, endpoint) {
      const s = this.strings;
      const passages = data.passages;
      const { found, threshold } = verdict(data);
      const items = passages.map((passage, i) => this._renderPassage(passage, base, i + 1,
        found && (i === 0 || !(Number(passage.confidence) < threshold))));
      const votes = this._renderFeedback(data.query_id, items, endpoint);
      if (!found || !passages.length) {
        this._announce(passages.length ? fill(s.notFound, { n: passages.length }) : s.noAnswer);
        const none = h("p", { class: "none", part: "no-answer", text: s.noAnswer });
        if (!passages.length) return [none, ...votes];
        const list = h("ol", { part: "answers", "aria-label": s.relatedList },
          ...items.map((item) => h("li", { part: "passage" }, item.body, item.meta)));
        return [none, ...votes, h("details", { part: "related" },
          h("summary", { part: "toggle", text: fill(s.related, { n: passages.length }) }), list)];
      }
      const [top, ...rest] = items;
      this._announce(fill(s.found, { t: top.title.slice(0, 80) }));
      const card = h("div", { class: "card", part: "passage answer-card" },
        h("p", { class: "answer", part: "answer", text: top.answer }), top.meta,
        h("details", { part: "context" }, h("summary", { part: "toggle", text: s.context }), top.body));
      if (!rest.length) return [card, ...votes];
      const list = h("ol", { part: "answers", "aria-label": s.more }, ...rest.map((item) => (
        item.confident ? h("li", { part: "passage" }, item.body, item.meta)
          : h("li", { part: "passage" }, h("details", {},
            h("summary", { part: "toggle", text: item.title }), item.body, item.meta)))));
      return [card, ...votes, h("h3", { part: "more", text: s.more }), list];
    }

    /** Thumbs on the answer and "This answered it" on each passage, when the server logged the
     * question (`query_id`). Votes go out one at a time, in order, since the server keeps the
     * last it receives; the buttons show that vote, or the one before if sending failed. */
    _renderFeedback(queryId, items, endpoint) {
      if (typeof queryId !== "string" || !queryId) return [];
      const s = this.strings;
      const note = h("span", { class: "note", part: "feedback-note" });
      const buttons = [];
      let kept = null;
      let latest = 0;
      let queue = Promise.resolve();
      const show = (vote) => {
        for (const [el, rating, passage] of buttons) {
          el.setAttribute("aria-pressed", String(Boolean(vote)
            && (passage ? vote.passage === passage : vote.rating === rating)));
        }
      };
      // Shown beside the thumbs and said once by the status line, like the answer's summary.
      const say = (text) => {
        note.textContent = text;
        this._announce(text);
      };
      const send = (rating, passage) => {
        const mine = ++latest;
        const vote = { rating, passage };
        show(vote);
        note.textContent = "";
        const body = { query_id: queryId, rating };
        if (passage) body.passage = passage;
        queue = queue.then(() => this._post(`${endpoint}/feedback`, body)).then(() => {
          kept = vote;
          this.dispatchEvent(new CustomEvent("qa-chat:feedback", {
            bubbles: true, composed: true, detail: { queryId, rating, passage },
          }));
          if (mine === latest) say(s.thanks);
        }, () => {
          if (mine !== latest) return;
          show(kept);
          say(s.unsent);  // quietly: the answer still stands, only the vote was lost
        });
      };
      const button = (props, rating, passage = null) => {
        const el = h("button", { type: "button", "aria-pressed": "false", ...props,
          onclick: () => send(rating, passage) }, ...(passage ? [] : [icon(THUMB_ICON)]));
        buttons.push([el, rating, passage]);
        return el;
      };
      for (const item of items) {
        item.meta.append(button({ class: "it", part: "answered-it", text: s.answered,
          "aria-label": `${s.answered}, ${s.passage} ${item.n}: ${item.title}` }, "up", item.n));
      }
      return [h("div", { class: "fb", part: "feedback", role: "group", "aria-label": s.rate },
        button({ part: "vote-up", "aria-label": s.up }, "up"),
        button({ part: "vote-down", "aria-label": s.down }, "down"), note)];
    }

    /** Authorization with the widget's key, if it has one, for every request it makes. */
    _headers() {
      const headers = { "Content-Type": "application/json", Accept: "application/json" };
      if (this.key) headers.Authorization = `Bearer ${this.key}`;
      return headers;
    }

    /** POST JSON; resolves on a 2xx, rejects on anything else (a refusal, no network, timeout). */
    async _post(url, body) {
      const controller = new AbortController();
      this._posts.add(controller);
      const timer = setTimeout(() => controller.abort(), this.timeout);
      try {
        const response = await fetch(url, {
          method: "POST", mode: "cors", credentials: "omit", signal: controller.signal,
          headers: this._headers(), body: JSON.stringify(body),
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
      } finally {
        clearTimeout(timer);
        this._posts.delete(controller);
      }
    }

    /** One passage: context (its sentence marked when `confident`), title, date and link. */
    _renderPassage(passage, base, n, confident) {
      const s = this.strings;
      const citation = passage.citation || {};
      const text = codePoints(passage.text);
      const start = Number(citation.start) || 0;
      const sentence = passage.highlight;
      const within = Boolean(sentence) && sentence.start >= start && sentence.end > sentence.start
        && sentence.end - start <= text.length;
      const highlight = confident ? sentence : null;
      const body = h("p", { class: "text", part: "text" });
      let answer = clipEnd(text.join(""));
      if (highlight && within) {
        const a = highlight.start - start;
        const b = highlight.end - start;
        answer = text.slice(a, b).join("");
        body.append(clipStart(text.slice(0, a).join("")),
          h("mark", { part: "highlight", text: answer }), clipEnd(text.slice(b).join("")));
      } else {
        body.append(answer);
      }
      const title = String(citation.title || citation.document_id || "");
      const meta = h("p", { class: "meta", part: "meta" }, h("strong", { text: title }));
      const date = citation.date ? this._date(citation.date) : "";
      if (date) meta.append(h("time", { datetime: String(citation.date), text: date }));
      const page = this.sourceLinks === "page" && citation.url ? httpUrl(citation.url) : null;
      const source = page ? null : httpUrl(`${base}/source/${String(citation.document_id || "")
        .split("/").map(encodeURIComponent).join("/")}`);
      let href = source && source.href;
      if (page) {
        // The live page at the sentence; its own #fragment kept, any old directive replaced.
        const own = page.hash.replace(/^#/, "").split(":~:")[0];
        page.hash = "";
        href = page.href + (within ? `#${own}${textFragment(text, sentence.start - start,
          sentence.end - start)}` : own ? `#${own}` : "");
      } else if (source) {
        source.searchParams.set("start", String(citation.start));
        source.searchParams.set("end", String(citation.end));
        if (highlight) {
          source.searchParams.set("highlight_start", String(highlight.start));
          source.searchParams.set("highlight_end", String(highlight.end));
        }
        // A new tab cannot send the Authorization header: a keyed widget's link carries its
        // (public, search-only) key, and the Referer its page's origin.
        if (this.key) source.searchParams.set("key", this.key);
        href = source.href;
      }
      if (href) {
        // Each link names its passage: "View source, passage 2: Title, 15 May 2025".
        meta.append(h("a", {
          part: "citation", href, target: "_blank", rel: "noopener",
          "aria-label": `${s.source}, ${s.passage} ${n}: ${[title, date].filter(Boolean).join(", ")}`,
          text: s.source,
        }));
      }
      return { body, meta, title, answer, confident, n };
    }

    _date(value) {
      const text = String(value);
      if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return text;
      try {
        return new Intl.DateTimeFormat(this.locale, { dateStyle: "medium", timeZone: "UTC" })
          .format(new Date(`${text}T00:00:00Z`));
      } catch {
        return text;
      }
    }

    /** Bring a turn's question to the top of the log, so the best passage shows first. */
    _scrollTo(turn) {
      this._log.scrollTop = turn.offsetTop - 14;
    }
  }

  if (!customElements.get(TAG)) customElements.define(TAG, QAChat);

  /** The one-tag embed: a <script data-endpoint> mounts a floating launcher on the page. */
  const mount = () => {
    if (!script || !script.hasAttribute("data-endpoint") || script.hasAttribute("data-mounted")) {
      return;
    }
    script.setAttribute("data-mounted", "");
    const chat = document.createElement(TAG);
    chat.setAttribute("floating", "");
    for (const name of ATTRS) {
      const value = script.getAttribute(`data-${name}`);
      if (value !== null) chat.setAttribute(name, value);
    }
    document.body.append(chat);
  };
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });
})();
