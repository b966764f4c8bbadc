/* emaild Web-to-Case: solves the form's ALTCHA challenge in the browser.
 *
 * On load it fetches the challenge (the form's data-challenge URL) and
 * searches for the counter whose SHA-256 key starts with the challenge's key
 * prefix, as the ALTCHA v2 protocol describes (password = nonce || uint32
 * counter, key = SHA-256(salt || password), iterated `cost` times). The
 * solution goes into the hidden `altcha` field as base64 JSON. Submitting
 * waits for it (and for the form's minimum fill time), then posts the form
 * as usual. No inline script, no third-party code: a strict CSP works.
 */
(function () {
  "use strict";

  var DIGESTS = { "SHA-256": "SHA-256", "SHA-384": "SHA-384", "SHA-512": "SHA-512" };
  var BATCH = 64;
  var MAX_MS = 120000;

  function fromHex(text) {
    var out = new Uint8Array(text.length / 2);
    for (var i = 0; i < out.length; i++) {
      out[i] = parseInt(text.substr(i * 2, 2), 16);
    }
    return out;
  }

  function toHex(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i++) {
      out += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    }
    return out;
  }

  async function derive(params, salt, nonce, counter) {
    var data = new Uint8Array(salt.length + nonce.length + 4);
    data.set(salt, 0);
    data.set(nonce, salt.length);
    new DataView(data.buffer).setUint32(salt.length + nonce.length, counter, false);
    var digest = DIGESTS[params.algorithm] || "SHA-256";
    var key = data;
    for (var i = 0; i < Math.max(1, params.cost || 1); i++) {
      key = new Uint8Array(await crypto.subtle.digest(digest, key));
    }
    return key.slice(0, params.keyLength || 32);
  }

  async function solve(challenge) {
    var p = challenge.parameters;
    var salt = fromHex(p.salt);
    var nonce = fromHex(p.nonce);
    var prefix = String(p.keyPrefix || "").toLowerCase();
    var started = performance.now();
    for (var base = 0; base <= 0xffffffff; base += BATCH) {
      var work = [];
      for (var i = 0; i < BATCH; i++) {
        work.push(derive(p, salt, nonce, base + i));
      }
      var keys = await Promise.all(work);
      for (var j = 0; j < BATCH; j++) {
        var hex = toHex(keys[j]);
        if (hex.indexOf(prefix) === 0) {
          return { counter: base + j, derivedKey: hex, time: performance.now() - started };
        }
      }
      if (performance.now() - started > MAX_MS) {
        throw new Error("the challenge took too long");
      }
    }
    throw new Error("no solution");
  }

  function randomNonce() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return toHex(bytes);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function setup(form) {
    var field = form.querySelector('input[name="altcha"]');
    var nonce = form.querySelector('input[name="nonce"]');
    var status = form.querySelector(".ewf-status");
    var button = form.querySelector('button[type="submit"]');
    var minFill = parseFloat(form.getAttribute("data-min-fill") || "0") * 1000;
    var fetchedAt = 0;
    var pending = null;
    var sending = false;

    function say(text) {
      if (status) { status.textContent = text; }
    }

    function prepare() {
      pending = fetch(form.getAttribute("data-challenge"), {
        credentials: "omit", cache: "no-store", headers: { Accept: "application/json" },
      }).then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        fetchedAt = performance.now();
        return response.json();
      }).then(async function (challenge) {
        var solution = await solve(challenge);
        field.value = btoa(JSON.stringify({ challenge: challenge, solution: solution }));
        return challenge;
      });
      pending.catch(function (error) {
        say("This form could not be prepared (" + error.message + "). Please reload the page.");
      });
      return pending;
    }

    if (!field || !form.getAttribute("data-challenge")) { return; }
    if (nonce && !nonce.value) { nonce.value = randomNonce(); }
    prepare();

    // Back from the thank-you page (the page restored as it was): a fresh
    // challenge, since the old one was used; the same content still makes one case.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) { return; }
      sending = false;
      if (button) { button.disabled = false; }
      say("");
      field.value = "";
      prepare();
    });

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (sending) { return; }
      sending = true;
      if (button) { button.disabled = true; }
      say("Sending…");
      try {
        var challenge = await pending;
        var expires = challenge.parameters.expiresAt;
        if (expires && expires * 1000 < Date.now() + 30000) {
          challenge = await prepare();
        }
        var wait = fetchedAt + minFill + 500 - performance.now();
        if (wait > 0) { await sleep(wait); }
        form.submit();
      } catch (error) {
        sending = false;
        if (button) { button.disabled = false; }
        say("This form could not be sent (" + error.message + "). Please try again.");
      }
    });
  }

  var forms = document.querySelectorAll("form.emaild-webform");
  for (var k = 0; k < forms.length; k++) { setup(forms[k]); }
})();
