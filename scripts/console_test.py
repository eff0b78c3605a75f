#!/usr/bin/env python3
"""Drives the web console (/ui/) in a real, headless Chromium and checks every flow.

    python scripts/console_test.py --url http://127.0.0.1:PORT --key KEY --screenshots DIR

The server is started by the caller, fresh, with an empty organisation whose API key is
KEY. Needs selenium (pinned in scripts/requirements-test.txt), /usr/bin/chromium and
/usr/bin/chromedriver (Debian's `chromium` and `chromium-driver`). Saves a screenshot of
each page at 1280x800 and the overview at 390x844 into DIR, prints a JSON line
{"timings_ms": {...}} (navigation click to the page's data rendered, from performance.now()
marks the console sets) and exits non-zero with a clear message on the first failed check.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

HOSTILE = "<img src=x onerror=window.__pwned=1>"
TYPE_SLUG = "compute_events"
CHROME_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
]


class Fail(Exception):
    """A check that did not hold."""


def log(msg: str) -> None:
    print(f"[console-test] {msg}", flush=True)


# ------------------------------------------------------------------ the API, directly

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx itself is the answer (raised as HTTPError)


class Api:
    def __init__(self, base: str, key: str):
        self.base = base.rstrip("/")
        self.key = key
        self.no_redirect = urllib.request.build_opener(NoRedirect)

    def call(self, method: str, path: str, body=None, params=None, headers=None, auth=True, follow=True):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None
        h = dict(headers or {})
        if auth:
            h["x-api-key"] = self.key
        if body is not None:
            data = json.dumps(body).encode()
            h["content-type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with (urllib.request.urlopen if follow else self.no_redirect.open)(req, timeout=60) as r:
                raw = r.read()
                return r.status, dict(r.headers), (json.loads(raw) if raw and "json" in r.headers.get("content-type", "") else raw)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw
            return e.code, dict(e.headers), payload

    def ok(self, method, path, body=None, params=None):
        status, _, payload = self.call(method, path, body, params)
        if status >= 300:
            raise Fail(f"API {method} {path} answered {status}: {payload}")
        return payload

    def count(self, where="", params=None):
        sql = f'SELECT count(*) AS n FROM "{TYPE_SLUG}"' + (f" WHERE {where}" if where else "")
        return self.ok("POST", "/sql", {"sql": sql, "params": params or {}})["rows"][0]["n"]


# ------------------------------------------------------------------ the browser

class Browser:
    def __init__(self, chromium: str, chromedriver: str, timeout: float, downloads: str):
        self.profile = tempfile.mkdtemp(prefix="console-test-profile-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for a in CHROME_ARGS + [f"--user-data-dir={self.profile}", "--window-size=1280,800"]:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service(chromedriver), options=opts)
        self.timeout = timeout
        self.downloads = downloads
        self.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
        self.viewport(1280, 800)
        self.logs: list[dict] = []

    def quit(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def viewport(self, width: int, height: int, mobile: bool = False):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
        })

    def wait(self, cond, what: str, timeout: float | None = None):
        """Waits for `cond(driver)` to be truthy; fails naming `what`."""
        def safe(d):
            try:
                return cond(d)
            except (StaleElementReferenceException, WebDriverException, AttributeError, IndexError, KeyError, TypeError):
                return False  # not there yet
        try:
            return WebDriverWait(self.d, timeout or self.timeout, poll_frequency=0.05).until(safe)
        except TimeoutException:
            raise Fail(f"timed out after {timeout or self.timeout}s waiting for {what}") from None

    def css(self, selector: str, root=None):
        return (root or self.d).find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str, what: str | None = None, root=None):
        return self.wait(lambda d: (self.css(selector, root) or [None])[0], what or selector)

    def visible(self, selector: str, what: str | None = None):
        return self.wait(lambda d: next((e for e in self.css(selector) if e.is_displayed()), None), what or selector)

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def by_label(self, text: str, root=None):
        """The control a `<label for>` whose text starts with `text` points at (labels are required)."""
        def find(d):
            for lab in self.css("label", root):
                if lab.text.strip().startswith(text) and lab.get_attribute("for"):
                    found = d.find_elements(By.ID, lab.get_attribute("for"))
                    if found:
                        return found[0]
            return None
        return self.wait(find, f'a control labelled "{text}"')

    def type_into(self, el, text: str):
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.DELETE)
        if text:
            el.send_keys(text)

    def select(self, el, value: str):
        """Picks the option whose value (the property: Preact leaves out a value attribute
        equal to the text) is `value`, as a user would."""
        for opt in Select(el).options:
            if opt.get_property("value") == value:
                if not opt.is_selected():
                    opt.click()
                return
        raise Fail(f"no option {value!r} in {el.get_attribute('id')}")

    def click(self, el):
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def screenshot(self, path: str, scroll_to=None, above: int = 70):
        if scroll_to is not None:
            self.js("arguments[0].scrollIntoView({block: 'start'})", scroll_to)
            self.js("window.scrollBy(0, -arguments[0])", above)  # 70: below the sticky bar
        else:
            self.js("window.scrollTo(0, 0)")
        time.sleep(0.15)  # let a resize or scroll paint
        self.d.save_screenshot(path)
        log(f"screenshot {path}")

    def drain_logs(self):
        try:
            self.logs.extend(self.d.get_log("browser"))
        except WebDriverException:
            pass
        return self.logs


# ------------------------------------------------------------------ the test

class ConsoleTest:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.url, args.key)
        self.shots = args.screenshots
        os.makedirs(self.shots, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="console-test-")
        self.b = Browser(args.chromium, args.chromedriver, args.timeout, os.path.join(self.tmp, "downloads"))
        self.timings: dict[str, int] = {}
        self.now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    # -- helpers

    def shot(self, name, scroll_to=None, above=70):
        self.b.screenshot(os.path.join(self.shots, name), scroll_to, above)

    def nav(self, page: str) -> int:
        """Clicks the page's link and waits for its data; returns (and records) the time."""
        b = self.b
        b.click(b.one(f"#nav-{page}"))
        b.wait(lambda d: b.js("return document.body.dataset.ready") == page, f"the {page} page's data")
        ms = b.js("return (window.__consoleTimings || {})[arguments[0]]", page)
        if ms is None:
            raise Fail(f"the {page} page recorded no timing")
        self.timings[page] = ms
        self.check_labels(page)
        return ms

    def check_labels(self, where: str):
        unlabelled = self.b.js("""
          return [...document.querySelectorAll('input, select, textarea')].filter((el) => {
            if (el.type === 'hidden' || el.closest('dialog:not([open])')) return false;
            if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
            if (el.closest('label')) return false;
            return !(el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`));
          }).map((el) => el.outerHTML.slice(0, 120));""")
        if unlabelled:
            raise Fail(f"{where}: controls without a label: {unlabelled}")

    def assert_not_pwned(self, where: str):
        if self.b.js("return typeof window.__pwned") != "undefined":
            raise Fail(f"{where}: the hostile customer id ran as markup (window.__pwned is set)")

    def table(self, selector: str):
        """Rows of a console DataTable as dicts column key → text."""
        return self.b.js("""
          const t = document.querySelector(arguments[0]);
          if (!t) return null;
          return [...t.querySelectorAll('tbody tr')].map((tr) => Object.fromEntries(
            [...tr.querySelectorAll('td')].map((td) => [td.dataset.col, td.textContent])));""", selector)

    def ts(self, minutes_ago: int) -> str:
        return (self.now - dt.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- flows

    def sign_in(self):
        b, url = self.b, self.args.url.rstrip("/")
        # / redirects to /ui/; /ui/ and /ui both serve the console, with the strict CSP.
        status, headers, _ = self.api.call("GET", "/", auth=False, follow=False)
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        if status not in (301, 302, 303, 307, 308) or location != "/ui/":
            raise Fail(f"GET / answered {status} with location {location!r}, expected a redirect to /ui/")
        for path in ("/ui/", "/ui"):
            status, headers, body = self.api.call("GET", path, auth=False)
            h = {k.lower(): v for k, v in headers.items()}
            if status != 200 or not h.get("content-type", "").startswith("text/html") or b"/ui/app.js" not in body:
                raise Fail(f"GET {path} answered {status} ({h.get('content-type')}), not the console's index.html")
            csp = h.get("content-security-policy", "")
            if "script-src 'self'" not in csp or "unsafe-inline" in csp:
                raise Fail(f"GET {path}: the console is served without the strict CSP: {csp!r}")
        # The browser opens the server's root and follows the redirect to the console.
        b.d.get(url + "/")
        try:
            b.wait(lambda d: d.current_url == url + "/ui/", "the redirect")
            key_input = b.by_label("API key")
        except Fail as e:
            raise Fail(f"opening {url}/ did not render the console at /ui/ (the browser is at {b.d.current_url}: {e})") from None
        # A wrong key is refused where it was typed.
        b.type_into(key_input, "not-a-key")
        b.click(b.one("form button[type=submit]"))
        b.wait(lambda d: "not accepted" in (b.css(".error-box") or [None])[0].text, "the refusal of a wrong key")
        if b.css("#org-name"):
            raise Fail("an organisation is shown before signing in")
        b.type_into(key_input, self.args.key)
        b.click(b.one("form button[type=submit]"))
        b.one("#nav-overview", "the console after signing in")
        b.wait(lambda d: b.js("return document.body.dataset.ready") == "overview", "the overview after signing in")
        stored = b.js("return sessionStorage.getItem('meterbase.apiKey')")
        if stored != self.args.key:
            raise Fail("the key is not kept in sessionStorage")
        if b.js("return document.cookie") or b.js("return Object.keys(localStorage).length"):
            raise Fail("the console left a cookie or localStorage behind")
        # The organisation signed in to is named in the top bar, and in the tab's title.
        org = self.api.ok("GET", "/organisation")
        if not isinstance(org, dict) or not org.get("name"):
            raise Fail(f"GET /organisation answered {org!r}, expected {{id, name, created_at}}")
        self.check_org(org["name"], "after signing in")
        # A reload (the key still in sessionStorage) fetches it again.
        b.d.refresh()
        b.wait(lambda d: b.js("return document.body.dataset.ready") == "overview", "the overview after a reload")
        self.check_org(org["name"], "after a reload")
        log(f"signed in at / (redirected to /ui/), organisation {org['name']!r} shown")

    def check_org(self, name: str, when: str):
        b = self.b
        shown = b.one("#org-name", f"the organisation's name in the top bar {when}")
        if shown.text != name:
            raise Fail(f"{when}: organisation shown {shown.text!r}, expected {name!r}")
        if not b.js("return arguments[0].closest('header.topbar') !== null", shown):
            raise Fail(f"{when}: the organisation's name is not in the top bar")
        if not shown.is_displayed():
            raise Fail(f"{when}: the organisation's name is hidden")
        try:
            b.wait(lambda d: f"· {name} ·" in d.title, "the title", timeout=5)
        except Fail:
            raise Fail(f"{when}: the tab's title {b.d.title!r} does not name the organisation {name!r}") from None

    def event_types(self):
        b = self.b
        self.nav("event-types")
        form = b.one("#create-event-type")
        b.type_into(b.by_label("Name", form), "Compute events")
        rows = b.css(".field-row", form)
        b.type_into(b.one(".field-name", root=rows[0]), "cpu_hours_consumed")
        b.select(b.css("select", rows[0])[0], "Float64")
        b.click(b.one("#add-field"))
        b.wait(lambda d: len(b.css(".field-row", form)) == 2, "a second field row")
        row2 = b.css(".field-row", form)[1]
        b.type_into(b.one(".field-name", root=row2), "region")
        b.select(b.css("select", row2)[0], "String")
        # Types with parameters compose into the contract's text (checked, then removed).
        b.click(b.one("#add-field"))
        b.wait(lambda d: len(b.css(".field-row", form)) == 3, "a third field row")
        row3 = b.css(".field-row", form)[2]
        b.type_into(b.one(".field-name", root=row3), "price")
        b.select(b.css("select", row3)[0], "Decimal")
        b.click(b.one("input[id$='-nullable']", root=row3))
        b.click(b.one("input[id$='-lowcard']", root=row3))
        b.wait(lambda d: '"price": "LowCardinality(Nullable(Decimal(18,2)))"' in b.one("#schema-preview").text,
               "Decimal/Nullable/LowCardinality composed in the JSON preview")
        b.click(b.one(".remove-field", root=row3))
        b.wait(lambda d: len(b.css(".field-row", form)) == 2, "the third field removed")
        endpoint = b.one("#endpoint-preview").text
        if endpoint != f"POST /usage/{TYPE_SLUG}":
            raise Fail(f"endpoint preview shows {endpoint!r}")
        spec = json.loads(b.one("#schema-preview").text)
        want = {"cpu_hours_consumed": "Float64", "region": "String"}
        if spec["dataschema"]["data"] != want or spec["unique_key"] != ["customer_id", "timestamp"]:
            raise Fail(f"JSON preview is {spec}")
        b.click(b.one("#create-type"))
        card = b.one(f"article[data-slug='{TYPE_SLUG}']", "the new event type in the list")
        got = self.api.ok("GET", f"/rawmetrics/{TYPE_SLUG}")
        if got["dataschema"]["data"] != want:
            raise Fail(f"created type has {got['dataschema']}")
        # Add a Nullable field through PATCH.
        b.click([x for x in b.css("button", card) if x.text == "Add field"][0])
        add = b.one("form.add-field", root=card)
        b.type_into(b.by_label("New field name", add), "zone")
        b.click(b.one("button[type=submit]", root=add))
        b.wait(lambda d: "Nullable(String)" in b.one(f"article[data-slug='{TYPE_SLUG}']").text, "the added Nullable field")
        if self.api.ok("GET", f"/rawmetrics/{TYPE_SLUG}")["dataschema"]["data"].get("zone") != "Nullable(String)":
            raise Fail("PATCH did not add zone: Nullable(String)")
        # Delete: a type holding events is a 409, explained, with a force option.
        self.api.ok("POST", "/rawmetrics", {"name": "Scratch", "dataschema": {"data": {"n": "Int64"}}})
        self.api.ok("POST", "/usage/scratch", {"customer_id": "x", "timestamp": self.ts(5), "data": {"n": 1}})
        self.nav("overview")
        self.nav("event-types")
        scratch = b.one("article[data-slug='scratch']", "the scratch type")
        b.click([x for x in b.css("button", scratch) if x.text.startswith("Delete")][0])
        b.click(b.visible("#confirm-delete-type", "the delete confirmation"))
        warning = b.visible("#delete-type-dialog .warning", "the 409 explanation")
        if "holds events" not in warning.text or "every event" not in warning.text:
            raise Fail(f"409 not explained: {warning.text!r}")
        b.click(b.visible("#force-delete-type", "the force option"))
        b.wait(lambda d: not b.css("article[data-slug='scratch']"), "the scratch type gone from the list")
        if self.api.call("GET", "/rawmetrics/scratch")[0] != 404:
            raise Fail("scratch still exists after a forced delete")
        self.shot("event-types.png")
        log("event types: created, field added, 409 + force delete")

    def csv_text(self, fixed: bool) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["customer_id", "timestamp", "CPU hours consumed", "region"])
        rows = [
            ["cus_1", self.ts(170), "1.5", "us-east-1"],
            ["cus_2", self.ts(160), "2.25", "eu-west-1"],
            ["cus_1", self.ts(150), "abc" if not fixed else "3", "us-east-1"],     # line 4
            ["cus_3", self.ts(140), "4", "us-east-1"],
            ["cus_2", self.ts(130), "0.5", "eu-west-1"],
            ["" if not fixed else "cus_3", self.ts(120), "6", "eu-west-1"],        # line 7
            ["cus_1", self.ts(110), "7.25", "us-east-1"],
            ["cus_2", "not-a-time" if not fixed else self.ts(100), "8", "us-east-1"],  # line 9
            ["cus_2", self.ts(90), "9", "eu-west-1"],
            ["cus_3", self.ts(80), "10", "us-east-1"],
        ]
        w.writerows(rows)
        self.csv_rows = rows
        return out.getvalue()

    def choose_file(self, text: str, name: str):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        self.b.by_label("CSV file").send_keys(path)
        self.b.wait(lambda d: name in self.b.one("#chosen-file").text, f"{name} chosen")
        self.b.one("#csv-mapping", "the column mapping")

    def upload(self):
        b = self.b
        self.nav("upload")
        b.select(b.by_label("Event type"), TYPE_SLUG)
        self.choose_file(self.csv_text(fixed=False), "usage-bad.csv")
        mapped = b.one("select[data-field='cpu_hours_consumed']").get_property("value")
        if mapped != "CPU hours consumed":
            raise Fail(f"cpu_hours_consumed was not matched to 'CPU hours consumed' from the header: {mapped!r}")
        b.click(b.one("#dry-run"))
        summary = b.one("#dry-run-summary", "the dry run's summary")
        if "10 rows checked: 7 valid" not in summary.text:
            raise Fail(f"dry run summary: {summary.text!r}")
        b.wait(lambda d: all(r.get("value") != "…" for r in (self.table("#csv-errors") or [{"value": "…"}])), "the offending cells read from the file")
        errors = {r["line"]: r for r in self.table("#csv-errors")}
        expect = {
            "4": ("CPU hours consumed", "abc", "Float64"),
            "7": ("customer_id", "(empty)", "non-empty"),
            "9": ("timestamp", "not-a-time", "timestamp"),
        }
        if sorted(errors) != sorted(expect):
            raise Fail(f"error lines {sorted(errors)}, expected {sorted(expect)}")
        for line, (column, value, reason) in expect.items():
            e = errors[line]
            if e["pointer"] != column or e["value"] != value or reason not in e["message"]:
                raise Fail(f"line {line}: got {e}, expected column {column!r}, value {value!r}, reason with {reason!r}")
            cell = b.css(f"td.cell-error[data-line='{line}'][data-column='{column}']")
            if not cell:
                raise Fail(f"line {line}, column {column} is not highlighted in the rows grid")
            if reason not in (cell[0].get_attribute("title") or ""):
                raise Fail(f"the highlighted cell of line {line} does not give the reason")
        if b.one("#store").is_enabled():
            raise Fail("Store is enabled although the dry run found problems")
        self.shot("upload-csv.png", scroll_to=b.one("#dry-run-result"))
        if self.api.count() != 0:
            raise Fail("a dry run stored rows")
        # The fixed file: dry run clean, then store.
        self.choose_file(self.csv_text(fixed=True), "usage-fixed.csv")
        b.click(b.one("#dry-run"))
        summary = b.one("#dry-run-summary", "the second dry run")
        if "10 rows checked: 10 valid" not in summary.text:
            raise Fail(f"dry run of the fixed file: {summary.text!r}")
        store = b.wait(lambda d: b.one("#store") if b.one("#store").is_enabled() else None, "Store enabled")
        b.click(store)
        result = b.one("#upload-result", "the upload's result")
        if "Stored 10 of 10 rows" not in result.text:
            raise Fail(f"upload result: {result.text!r}")
        if self.api.count() != 10:
            raise Fail(f"{self.api.count()} events stored, expected 10")
        log("upload: 3 bad rows highlighted, fixed file stored")

    def apply_filters(self, customer="", frm="", to="", limit=None):
        b = self.b
        form = b.one("#events-filters")
        b.type_into(b.by_label("Customer id", form), customer)
        b.type_into(b.by_label("From", form), frm)
        b.type_into(b.by_label("To", form), to)
        b.click(b.one("#apply-filters"))
        if limit:
            b.select(b.by_label("Rows per page", form), limit)
        # Callers wait for the rows they expect.

    def events(self):
        b = self.b
        self.nav("events")
        b.select(b.by_label("Event type"), TYPE_SLUG)
        b.wait(lambda d: self.table("#events-table") is not None and len(self.table("#events-table")) == 10, "10 events listed")
        self.apply_filters(customer="cus_1")
        rows = b.wait(lambda d: (lambda t: t if t and all(r["customer_id"] == "cus_1" for r in t) else None)(self.table("#events-table")), "cus_1's events")
        if len(rows) != 3 or any(not r["ingested_at"].endswith("Z") for r in rows):
            raise Fail(f"cus_1's rows: {rows}")
        # Cursor paging: 5 per page.
        self.apply_filters(customer="", limit="5")
        b.wait(lambda d: "Rows 1–5, more follow" in b.one("#events-range").text, "page 1 of 5 rows")
        page1 = [r["timestamp"] for r in self.table("#events-table")]
        b.click(b.one("#next-page"))
        b.wait(lambda d: b.one("#events-range").text.startswith("Rows 6–10"), "page 2")
        page2 = [r["timestamp"] for r in self.table("#events-table")]
        if set(page1) & set(page2) or len(page2) != 5:
            urls = b.js("const r = performance.getEntriesByType('resource'); return [r.length, document.getElementById('events-range').dataset.cursor, ...r.map((e) => e.name).filter((n) => n.includes('/events?')).slice(-4)]")
            raise Fail(f"pages overlap or are short: {page1} / {page2} (last requests: {urls})")
        b.click(b.one("#prev-page"))
        b.wait(lambda d: b.one("#events-range").text.startswith("Rows 1–5"), "back on page 1")
        b.select(b.by_label("Rows per page"), "100")
        b.wait(lambda d: len(self.table("#events-table") or []) == 10, "all 10 events again")
        self.shot("events.png")
        # Delete a range: cus_2 between 165 and 95 minutes ago (3 of its 4 events).
        frm, to = self.ts(165), self.ts(95)
        expected = self.api.count("customer_id = $c AND timestamp >= $f AND timestamp < $t", {"c": "cus_2", "f": frm, "t": to})
        if expected != 3:
            raise Fail(f"test data: {expected} events in the range, expected 3")
        self.apply_filters(customer="cus_2", frm=frm, to=to)
        b.wait(lambda d: len(self.table("#events-table") or []) == 3, "the 3 events of the range")
        b.js("performance.clearResourceTimings()")  # the buffer keeps 250 entries: start empty
        b.click(b.one("#delete-range"))
        counted = b.visible("#would-delete-count", "the count of events the deletion would remove").text
        if counted != "3":
            raise Fail(f"the confirmation says {counted} events, expected 3")
        # The count is the deletion's own dry run, and it deleted nothing.
        dry = b.js("return performance.getEntriesByType('resource').map((e) => e.name)"
                   ".filter((n) => n.includes('/events?') && n.includes('dry_run=true'))")
        if len(dry) != 1 or "customer_id=cus_2" not in dry[0]:
            raise Fail(f"the count did not come from one DELETE …&dry_run=true: {dry}")
        if self.api.count() != 10:
            raise Fail("events were deleted before the deletion was confirmed")
        b.click(b.one("#confirm-delete-range"))
        notice = b.one("#events-notice", "the deletion's result")
        # What the real deletion reports ({"deleted": N}) is what the dry run counted.
        if not notice.text.startswith(f"Deleted {counted} events."):
            raise Fail(f"deletion result: {notice.text!r}, expected the {counted} events counted")
        if self.api.count() != 7:
            raise Fail(f"{self.api.count()} events left, expected 7")
        b.wait(lambda d: self.table("#events-table") == [], "the deleted range empty")
        log("events: filters, paging, range deletion with its count first")

    def hostile(self):
        b = self.b
        self.api.ok("POST", f"/usage/{TYPE_SLUG}", {"customer_id": HOSTILE, "timestamp": self.ts(60),
                                                    "data": {"cpu_hours_consumed": 1, "region": "<b>bold</b>"}})
        self.nav("events")
        self.apply_filters(customer=HOSTILE)
        rows = b.wait(lambda d: (lambda t: t if t and len(t) == 1 and t[0]["customer_id"] == HOSTILE else None)(self.table("#events-table")),
                      "the hostile event, its customer id shown literally")
        if rows[0]["region"] != "<b>bold</b>":
            raise Fail(f"hostile values not shown literally: {rows[0]}")
        if b.css("#events-table img, #events-table b, main h2 img"):
            raise Fail("hostile customer id became markup in the events page")
        self.assert_not_pwned("events page")
        log("hostile customer id shown as text on the events page")

    def run_sql(self, text: str, params: str = "{}"):
        b = self.b
        b.type_into(b.by_label("Query"), text)
        b.type_into(b.by_label("Params"), params)
        b.click(b.one("#run-sql"))

    def sql(self):
        b = self.b
        self.nav("sql")
        tables = b.one("nav.tables")
        if TYPE_SLUG not in tables.text:
            raise Fail("the SQL page does not list the org's tables")
        # An error shows where it happened.
        self.run_sql("SELEC 1")
        err = b.visible("#sql-error .error-box", "the SQL error under the editor")
        if "SQL error" not in err.text:
            raise Fail(f"SQL error box: {err.text!r}")
        # Bad params JSON is caught at the params field.
        b.type_into(b.by_label("Params"), "{nope")
        b.visible(".field-error", "the params error")
        # Hostile value in results.
        self.run_sql("SELECT customer_id, count(*) AS n FROM compute_events WHERE customer_id LIKE $p GROUP BY customer_id", '{"p": "<img%"}')
        b.wait(lambda d: (self.table("#sql-table") or [{}])[0].get("customer_id") == HOSTILE, "the hostile id as text in SQL results")
        if b.css("#sql-table img"):
            raise Fail("hostile customer id became markup in SQL results")
        self.assert_not_pwned("SQL page")
        # A time + number result is charted.
        b.js("delete window.__consoleTimings.sql_query")
        self.run_sql("SELECT date_trunc('minute', timestamp) AS t, sum(cpu_hours_consumed) AS cpu_hours, count(*) AS events\n"
                     "FROM compute_events\nGROUP BY 1\nORDER BY 1")
        b.wait(lambda d: len(self.table("#sql-table") or []) == 8, "8 rows of the chart query")
        b.one("#sql-chart canvas", "the chart of the results")
        self.timings["sql_query"] = b.wait(lambda d: b.js("return window.__consoleTimings.sql_query"), "the query timing mark")
        # Downloads through the Accept header.
        for kind, name, magic in (("csv", "query.csv", b"t,cpu_hours,events"), ("parquet", "query.parquet", b"PAR1")):
            b.click(b.one(f"#download-{kind}"))
            b.wait(lambda d: f"Downloaded {name}" in (b.css("#download-status") or [None])[0].text, f"the {kind} download")
            path = os.path.join(self.b.downloads, name)
            b.wait(lambda d: os.path.exists(path) and os.path.getsize(path) > 0, f"{name} on disk", timeout=15)
            with open(path, "rb") as f:
                head = f.read(64)
            if not head.startswith(magic):
                raise Fail(f"{name} starts with {head[:20]!r}")
        self.shot("sql.png", scroll_to=b.one("#sql-form"), above=60)
        log("sql: error shown, params, chart, CSV and Parquet downloads, hostile id as text")

    def metrics(self):
        b = self.b
        self.nav("metrics")
        form = b.one("#create-metric")
        b.type_into(b.by_label("Name", form), "CPU hours")
        b.select(b.by_label("Event type", form), TYPE_SLUG)
        b.select(b.by_label("Aggregation", form), "sum")
        b.select(b.by_label("Field", form), "cpu_hours_consumed")
        preview = b.wait(lambda d: (b.css("#preview-missing") or b.css("#preview-table") or b.css("#metric-preview p.empty") or [None])[0],
                         "the live preview (or the note that the server has none)")
        log(f"metric preview: {'endpoint missing, note shown' if preview.get_attribute('id') == 'preview-missing' else 'rows shown'}")
        definition = json.loads(b.js("return document.getElementById('metric-json').textContent"))
        if definition != {"name": "CPU hours", "usage_event": TYPE_SLUG, "aggregation": "sum", "field": "cpu_hours_consumed"}:
            raise Fail(f"builder definition: {definition}")
        b.click(b.one("#create-metric-submit"))
        b.one("#usage-form", "the new metric's usage")
        b.wait(lambda d: b.js("return document.body.dataset.ready") == "metrics", "the metric page")
        start = (self.now - dt.timedelta(days=2)).strftime("%Y-%m-%d")
        end = (self.now + dt.timedelta(days=2)).strftime("%Y-%m-%d")
        usage_form = b.one("#usage-form")
        b.type_into(b.by_label("Start", usage_form), start)
        b.type_into(b.by_label("End", usage_form), end)
        b.select(b.by_label("Window", usage_form), "day")
        b.type_into(b.by_label("Time zone", usage_form), "UTC")
        b.js("delete window.__consoleTimings.metric_usage")
        b.click(b.one("#show-usage"))
        b.wait(lambda d: f"start={start}" in b.js("return location.hash") and self.table("#usage-table"), "the usage table")
        b.one("#usage-chart canvas", "the usage chart")
        self.timings["metric_usage"] = b.wait(lambda d: b.js("return window.__consoleTimings.metric_usage"), "the usage timing mark")
        rows = self.table("#usage-table")
        got: dict[str, float] = {}
        for r in rows:
            got[r["customer_id"]] = got.get(r["customer_id"], 0) + float(r["value"])
        want_rows = self.api.ok("POST", "/sql", {"sql": "SELECT customer_id, sum(cpu_hours_consumed) AS v FROM compute_events GROUP BY customer_id"})["rows"]
        want = {r["customer_id"]: r["v"] for r in want_rows}
        if set(got) != set(want) or any(abs(got[k] - want[k]) > 1e-9 for k in want):
            raise Fail(f"usage per customer {got}, expected {want}")
        if b.css("#usage-table img"):
            raise Fail("hostile customer id became markup in the usage table")
        self.assert_not_pwned("metrics page")
        self.shot("metrics.png", scroll_to=b.one("#usage"))
        # Drill into one customer.
        link = [a for a in b.css("#usage-table a.drill") if a.text == "cus_1"][0]
        b.click(link)
        b.wait(lambda d: (b.css("#drill-customer") or [None])[0].text == "cus_1", "the drill-down to cus_1")
        b.wait(lambda d: (lambda t: t and {r["customer_id"] for r in t} == {"cus_1"})(self.table("#usage-table")), "cus_1's usage only")
        log("metrics: builder metric created, usage table + chart, drill-down")

    def overview(self):
        b = self.b
        self.nav("overview")
        rows = self.table("#overview-table")
        row = next((r for r in rows if TYPE_SLUG in r.get("type", "")), None)
        if not row:
            raise Fail(f"overview lists no {TYPE_SLUG}: {rows}")
        n = self.api.count()
        if row["n"].replace(",", "") != str(n):
            raise Fail(f"overview says {row['n']} events stored, expected {n}")
        b.one("#overview-chart canvas", "the events/s chart")
        if b.one("#health-status").text != "ok":
            raise Fail("health is not ok")
        self.shot("overview.png")
        b.viewport(390, 844, mobile=True)
        b.wait(lambda d: b.js("return document.documentElement.clientWidth") == 390, "the phone viewport")
        overflow = b.js("return document.documentElement.scrollWidth")
        if overflow > 392:
            raise Fail(f"the overview scrolls sideways on a phone ({overflow}px wide)")
        self.shot("overview-phone.png")
        b.viewport(1280, 800)
        log("overview: counts, chart, health; phone width fits")

    def sign_out(self):
        b = self.b
        b.click(b.one("#sign-out"))
        b.by_label("API key")
        if b.js("return sessionStorage.getItem('meterbase.apiKey')") is not None:
            raise Fail("sign out left the key in sessionStorage")
        log("signed out")

    def check_console_logs(self):
        bad = []
        for e in self.b.drain_logs():
            msg = e.get("message", "")
            if "Content Security Policy" in msg or "Uncaught" in msg:
                bad.append(msg)
        if bad:
            raise Fail("browser console errors:\n  " + "\n  ".join(bad[:10]))

    def run(self):
        try:
            self.sign_in()
            self.event_types()
            self.upload()
            self.events()
            self.hostile()
            self.sql()
            self.metrics()
            self.overview()
            self.check_console_logs()
            self.sign_out()
        except Fail:
            try:
                self.b.screenshot(os.path.join(self.shots, "failure.png"))
                for e in self.b.drain_logs()[-15:]:
                    log(f"browser {e.get('level')}: {e.get('message', '')[:300]}")
            except WebDriverException:
                pass
            raise
        finally:
            self.b.quit()
            shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", required=True, help="an API key of a fresh, empty organisation")
    ap.add_argument("--screenshots", required=True, help="directory for the PNGs")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for any one thing")
    args = ap.parse_args()
    api = Api(args.url, args.key)
    status, _, items = api.call("GET", "/rawmetrics")
    if status != 200:
        print(f"FAIL: the key is not accepted by {args.url} ({status})", file=sys.stderr)
        return 2
    if items.get("items"):
        print(f"FAIL: the organisation is not empty (has {[i['api_slug'] for i in items['items']]}); start a fresh server", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    test = ConsoleTest(args)
    try:
        test.run()
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        print(json.dumps({"timings_ms": test.timings}))
        return 1
    log(f"all checks passed in {time.monotonic() - t0:.1f}s")
    print(json.dumps({"timings_ms": test.timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
