/* <qa-chat>: a dependency-free chat widget for the qa API, served as-is (no build step).
 * Embed: <script src="https://HOST/widget.js" data-endpoint="https://HOST" defer></script>
 * or place <qa-chat endpoint="https://HOST"></qa-chat> inline. See the README, "Chat widget".
 * Anything that comes from the server or a document is written with textContent, never parsed
 * as HTML, and only http(s) URLs become links. The file is ASCII (\u escapes), so it reads the
 * same whatever charset the host page declares. */
(() => {
  "use strict";
  const TAG = "qa-chat";
  const script = document.currentScript;
  // Where this file was loaded from: the default endpoint when none is given.
  const scriptUrl = script && script.src ? script.src : "";
  const ATTRS = ["endpoint", "title", "placeholder", "lang", "k", "open", "timeout"];
  const CONTEXT_CHARS = 160;

  const STRINGS = {
    en: {
      title: "Ask a question", placeholder: "Ask about these documents\u2026",
      open: "Open chat", close: "Close", send: "Send", question: "Your question",
      answers: "Answers", searching: "Searching\u2026", cancelled: "Cancelled.",
      none: "No passages found for this question.", source: "View source",
      unreachable: "Could not reach the server. Check your connection and try again.",
      timeout: "The server is taking too long to answer. Please try again.",
      failed: "The server could not answer", noEndpoint: "This widget has no valid endpoint.",
    },
    fr: {
      title: "Posez une question", placeholder: "Une question sur ces documents\u2026",
      open: "Ouvrir le chat", close: "Fermer", send: "Envoyer", question: "Votre question",
      answers: "R\u00e9ponses", searching: "Recherche\u2026", cancelled: "Annul\u00e9.",
      none: "Aucun passage trouv\u00e9 pour cette question.", source: "Voir la source",
      unreachable: "Serveur injoignable. V\u00e9rifiez votre connexion et r\u00e9essayez.",
      timeout: "Le serveur met trop de temps \u00e0 r\u00e9pondre. R\u00e9essayez.",
      failed: "Le serveur n\u2019a pas pu r\u00e9pondre", noEndpoint: "Ce widget n\u2019a pas d\u2019adresse valide.",
    },
    de: {
      title: "Stellen Sie eine Frage", placeholder: "Frage zu diesen Dokumenten\u2026",
      open: "Chat \u00f6ffnen", close: "Schlie\u00dfen", send: "Senden", question: "Ihre Frage",
      answers: "Antworten", searching: "Suche\u2026", cancelled: "Abgebrochen.",
      none: "Keine passenden Stellen gefunden.", source: "Quelle ansehen",
      unreachable: "Server nicht erreichbar. Bitte Verbindung pr\u00fcfen und erneut versuchen.",
      timeout: "Der Server antwortet zu langsam. Bitte erneut versuchen.",
      failed: "Der Server konnte nicht antworten", noEndpoint: "Dieses Widget hat keine g\u00fcltige Adresse.",
    },
  };

  const CSS = `
:host{all:initial;display:block;font:var(--qa-font,14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);color:var(--qa-fg,#1f2328);--_accent:var(--qa-accent,#0b57d0);--_border:var(--qa-border,#d0d7de);--_muted:var(--qa-muted,#59636e)}
:host([hidden]){display:none}
:host([floating]){position:fixed;right:var(--qa-offset,16px);bottom:var(--qa-offset,16px);z-index:var(--qa-z-index,2147483000)}
*,*::before,*::after{box-sizing:border-box}
button{font:inherit;cursor:pointer}
.launcher{display:grid;place-items:center;width:56px;height:56px;margin-left:auto;border:0;border-radius:50%;background:var(--_accent);color:var(--qa-accent-fg,#fff);box-shadow:0 4px 14px rgba(0,0,0,.25)}
.launcher svg{width:26px;height:26px;fill:currentColor}
.panel{display:flex;flex-direction:column;width:100%;max-width:var(--qa-width,420px);height:var(--qa-height,540px);margin-top:12px;background:var(--qa-bg,#fff);border:1px solid var(--_border);border-radius:var(--qa-radius,12px);box-shadow:0 10px 32px rgba(0,0,0,.18);overflow:hidden}
:host([floating]) .panel{position:absolute;right:0;bottom:calc(100% + 12px);margin:0;width:min(var(--qa-width,380px),calc(100vw - 2 * var(--qa-offset,16px)));height:min(var(--qa-height,560px),calc(100dvh - 104px))}
.panel[hidden]{display:none}
header{display:flex;align-items:center;gap:8px;padding:10px 8px 10px 14px;background:var(--_accent);color:var(--qa-accent-fg,#fff)}
h2{flex:1;min-width:0;margin:0;font-size:1.05em;font-weight:600;overflow-wrap:anywhere}
.close{width:32px;height:32px;border:0;border-radius:6px;background:transparent;color:inherit;font-size:22px;line-height:1}
.close:hover{background:rgba(255,255,255,.18)}
.log{position:relative;flex:1;display:flex;flex-direction:column;gap:14px;padding:14px;overflow:hidden auto;overscroll-behavior:contain}
.turn{display:flex;flex-direction:column;gap:8px;min-width:0}
.q{align-self:flex-end;max-width:88%;margin:0;padding:8px 12px;border-radius:14px 14px 4px 14px;background:var(--_accent);color:var(--qa-accent-fg,#fff);overflow-wrap:anywhere}
ol{display:grid;gap:8px;margin:0;padding:0;list-style:none}
li{min-width:0;padding:10px 12px;border:1px solid var(--_border);border-radius:10px;background:var(--qa-card-bg,#f6f8fa)}
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
.send{flex:none;display:grid;place-items:center;width:40px;border:0;border-radius:8px;background:var(--_accent);color:var(--qa-accent-fg,#fff)}
.send svg{width:18px;height:18px;fill:currentColor}
:focus-visible{outline:2px solid var(--qa-focus,var(--_accent));outline-offset:2px}
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

  class ProblemError extends Error {
    constructor(status, body) {
      const detail = body && (body.detail || body.title);
      super(typeof detail === "string" ? detail : `HTTP ${status}`);
      this.status = status;
    }
  }

  class QAChat extends HTMLElement {
    static get observedAttributes() {
      return ATTRS;
    }

    constructor() {
      super();
      this._controller = null;
      const root = this.attachShadow({ mode: "open" });
      this._launcher = h("button", {
        type: "button", class: "launcher", part: "launcher",
        "aria-controls": "panel", "aria-expanded": "false", onclick: () => this.toggle(!this.open),
      }, icon("M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"));
      this._heading = h("h2", { id: "heading", part: "title" });
      this._close = h("button", {
        type: "button", class: "close", part: "close", text: "\u00d7", onclick: () => this.toggle(false),
      });
      this._log = h("div", {
        class: "log", part: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions",
      });
      this._label = h("label", { for: "input", class: "sr" });
      this._input = h("input", {
        id: "input", part: "input", type: "text", autocomplete: "off", enterkeyhint: "send",
        maxlength: "1000",
      });
      this._send = h("button", { type: "submit", class: "send", part: "send" },
        icon("M3 20.5 21 12 3 3.5 3 10l12 2-12 2z"));
      this._form = h("form", { part: "form", onsubmit: (event) => this._submit(event) },
        this._label, this._input, this._send);
      this._panel = h("section", {
        id: "panel", class: "panel", part: "panel", role: "dialog", "aria-labelledby": "heading",
        hidden: "",
      }, h("header", { part: "header" }, this._heading, this._close), this._log, this._form);
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

    /** Passages to ask for: an integer in 1..50, or null to use the server's default. */
    get k() {
      const value = Number(this.getAttribute("k"));
      return Number.isInteger(value) && value >= 1 && value <= 50 ? value : null;
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
    }

    attributeChangedCallback() {
      if (this.isConnected) this.update();
    }

    /** Write the configuration into the shadow root; the one place that does. */
    update() {
      const s = this.strings;
      this._heading.textContent = this.heading;
      this._launcher.setAttribute("aria-label", `${s.open}: ${this.heading}`);
      this._launcher.setAttribute("aria-expanded", String(this.open));
      this._close.setAttribute("aria-label", s.close);
      this._send.setAttribute("aria-label", s.send);
      this._label.textContent = s.question;
      this._log.setAttribute("aria-label", s.answers);
      this._input.placeholder = this.placeholder;
      this._panel.hidden = !this.open;
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
      this._log.append(turn);
      this._log.setAttribute("aria-busy", "true");
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
        let response;
        try {
          response = await fetch(`${endpoint}/ask`, {
            method: "POST", mode: "cors", credentials: "omit", signal: controller.signal,
            headers: { "Content-Type": "application/json", Accept: "application/json" },
            body: JSON.stringify(body),
          });
        } catch (error) {
          if (controller.signal.aborted) throw error;
          throw new Error(s.unreachable);
        }
        const data = await response.json().catch(() => null);
        if (!response.ok) throw new ProblemError(response.status, data);
        if (!data || !Array.isArray(data.passages)) throw new ProblemError(response.status, null);
        status.replaceWith(this._renderAnswer(data.passages, endpoint));
        this.dispatchEvent(new CustomEvent("qa-chat:answer", {
          bubbles: true, composed: true, detail: { question, passages: data.passages },
        }));
      } catch (error) {
        if (controller.signal.aborted && !timedOut) {
          status.replaceWith(h("p", { class: "status", part: "status", text: s.cancelled }));
          return;
        }
        const message = timedOut ? s.timeout
          : error instanceof ProblemError ? `${s.failed} (${error.status}): ${error.message}`
          : error.message;
        status.replaceWith(h("p", { class: "error", part: "error", role: "alert", text: message }));
        this.dispatchEvent(new CustomEvent("qa-chat:error", {
          bubbles: true, composed: true, detail: { question, message },
        }));
      } finally {
        clearTimeout(timer);
        if (this._controller === controller) {
          this._controller = null;
          this._log.removeAttribute("aria-busy");
        }
        this._scrollTo(turn);
      }
    }

    _renderAnswer(passages, endpoint) {
      if (!passages.length) return h("p", { class: "status", part: "status", text: this.strings.none });
      const list = h("ol", { part: "answers", "aria-label": this.strings.answers });
      for (const passage of passages) list.append(this._renderPassage(passage, endpoint));
      return list;
    }

    /** One passage: context, the answer sentence marked, then title, date and citation link. */
    _renderPassage(passage, endpoint) {
      const s = this.strings;
      const citation = passage.citation || {};
      const text = codePoints(passage.text);
      const start = Number(citation.start) || 0;
      const highlight = passage.highlight;
      const body = h("p", { class: "text", part: "text" });
      if (highlight && highlight.start >= start && highlight.end > highlight.start
          && highlight.end - start <= text.length) {
        const a = highlight.start - start;
        const b = highlight.end - start;
        body.append(clipStart(text.slice(0, a).join("")),
          h("mark", { part: "highlight", text: text.slice(a, b).join("") }),
          clipEnd(text.slice(b).join("")));
      } else {
        body.append(clipEnd(text.join("")));
      }
      const title = String(citation.title || citation.document_id || "");
      const meta = h("p", { class: "meta", part: "meta" }, h("strong", { text: title }));
      if (citation.date) {
        meta.append(h("time", { datetime: String(citation.date), text: this._date(citation.date) }));
      }
      const source = httpUrl(`${endpoint}/source/${String(citation.document_id || "")
        .split("/").map(encodeURIComponent).join("/")}`);
      if (source) {
        source.searchParams.set("start", String(citation.start));
        source.searchParams.set("end", String(citation.end));
        if (highlight) {
          source.searchParams.set("highlight_start", String(highlight.start));
          source.searchParams.set("highlight_end", String(highlight.end));
        }
        meta.append(h("a", {
          part: "citation", href: source.href, target: "_blank", rel: "noopener",
          "aria-label": `${s.source}: ${title}`, text: s.source,
        }));
      }
      return h("li", { part: "passage" }, body, meta);
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
