#!/usr/bin/env python3
"""End-to-end test of the web chat page (`GET /`, crates/llama-app/src/serve/chat.html).

Drives headless Chromium with Selenium against a running server (docs/serve.md):

    python tests/serve/web_chat.py --url http://127.0.0.1:8080/ [--screenshot fail.png]

It loads the page, sends a first message with Enter, checks that the reply streams in (or, when it
comes too fast to watch, that the response was text/event-stream), waits for the stats line, then
sends a second message with the Send button and checks from Chrome's network log that the second
request carried the whole conversation. Exit 0 on success; 1 with a message naming what failed.

Needs: Debian's `chromium` and `chromium-driver`, and `pip install selenium`.
"""
import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

FIRST = "My name is Ada. Say hello."
SECOND = "What is my name?"
CHAT_PATH = "/v1/chat/completions"

# Records, for every assistant message, the reply text's length each time the DOM changes while the
# message is data-state="streaming", and whether #send was disabled then. A MutationObserver sees
# every change; polling from Python could miss a fast stream.
WATCH_JS = """
window.__watch = [];
const textOf = (el) => (el.querySelector('.text') || el).textContent;
new MutationObserver(() => {
  const all = document.querySelectorAll('#messages .message.assistant');
  const el = all[all.length - 1];
  if (!el || el.dataset.state !== 'streaming') return;
  (window.__watch[all.length - 1] ||= []).push(
      {len: textOf(el).length, sendDisabled: document.getElementById('send').disabled});
}).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
"""
# The reply exactly as displayed: the .text part of the bubble, without the stats/error notes.
REPLY_TEXT_JS = """
const el = arguments[0];
return (el.querySelector('.text') || el).textContent;
"""


class Failure(Exception):
    pass


def start_browser(args, profile_dir):
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    # The machines this runs on have no outside network: without these, Chromium stalls on
    # background connections (QUIC, component updates, sync) and /dev/shm limits.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}",
                 "--window-size=1100,800"):
        opts.add_argument(flag)
    # The performance log carries DevTools Network events: request bodies and response MIME types.
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=opts)
    driver.set_page_load_timeout(60)
    return driver


class NetworkLog:
    """Chrome's performance log, accumulated: each get_log() call returns only the new entries."""

    def __init__(self, driver):
        self.driver = driver
        self.events = []

    def pull(self):
        for entry in self.driver.get_log("performance"):
            self.events.append(json.loads(entry["message"])["message"])

    def chat_posts(self):
        """(requestId, parsed JSON body) of every POST to /v1/chat/completions, in order."""
        posts = []
        for ev in self.events:
            if ev["method"] != "Network.requestWillBeSent":
                continue
            req = ev["params"]["request"]
            if req["method"] == "POST" and req["url"].split("?")[0].endswith(CHAT_PATH):
                posts.append((ev["params"]["requestId"], json.loads(self.post_body(ev["params"]))))
        return posts

    def post_body(self, params):
        req = params["request"]
        if "postData" in req:
            return req["postData"]
        if req.get("postDataEntries"):  # newer Chrome: base64 pieces instead of postData
            return b"".join(base64.b64decode(e.get("bytes", "")) for e in req["postDataEntries"]).decode()
        return self.driver.execute_cdp_cmd("Network.getRequestPostData",
                                           {"requestId": params["requestId"]})["postData"]

    def mime_type(self, request_id):
        for ev in self.events:
            if ev["method"] == "Network.responseReceived" and ev["params"]["requestId"] == request_id:
                return ev["params"]["response"]["mimeType"]
        return None

    def wait_chat_posts(self, count, timeout=15):
        """The first `count` chat POSTs, each with its response seen; the log can lag the page."""
        deadline = time.time() + timeout
        while True:
            self.pull()
            posts = self.chat_posts()
            if len(posts) >= count and all(self.mime_type(rid) for rid, _ in posts[:count]):
                return posts[:count]
            if time.time() > deadline:
                raise Failure(f"network log: expected {count} POST {CHAT_PATH} with responses, "
                              f"saw {len(posts)}")
            time.sleep(0.2)


def assistant_messages(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#messages .message.assistant")


def send(driver, text, use_enter):
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    if use_enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "send").click()


def wait_reply(driver, index, timeout):
    """Wait until assistant message `index` exists and is data-state="done"; return (element, text)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        msgs = assistant_messages(driver)
        if len(msgs) > index:
            el = msgs[index]
            state = el.get_attribute("data-state")
            if state == "error":
                notes = el.find_elements(By.CSS_SELECTOR, ".error")
                raise Failure(f"reply {index + 1}: the page shows an error: "
                              f"{notes[0].text if notes else el.text!r}")
            if state == "done":
                return el, driver.execute_script(REPLY_TEXT_JS, el)
        time.sleep(0.1)
    raise Failure(f"reply {index + 1}: no assistant message with data-state=\"done\" after {timeout} s")


def check_reply(driver, net, index, text, el):
    """A finished reply: non-empty, streamed, with a stats line, and Send disabled while it streamed."""
    if not text.strip():
        raise Failure(f"reply {index + 1}: empty text")
    stats = el.find_elements(By.CSS_SELECTOR, ".stats")
    if not stats or "tok/s" not in stats[0].text:
        raise Failure(f"reply {index + 1}: no .stats line with 'tok/s' (got {stats[0].text if stats else None!r})")
    watched = driver.execute_script("return window.__watch[arguments[0]] || []", index)
    if any(not w["sendDisabled"] for w in watched):
        raise Failure(f"reply {index + 1}: #send was enabled while the reply streamed")
    lengths = [w["len"] for w in watched]
    growths = sum(1 for a, b in zip([0] + lengths, lengths) if b > a)
    # The response must be an event stream whatever the page showed; when the reply came too fast
    # to be seen growing twice, this is what shows it was streamed.
    rid, _ = net.wait_chat_posts(index + 1)[index]
    mime = net.mime_type(rid)
    if mime != "text/event-stream":
        raise Failure(f"reply {index + 1}: response MIME type {mime!r}, expected text/event-stream")
    how = f"seen growing {growths} times" if growths >= 2 else "too fast to watch; text/event-stream"
    print(f"reply {index + 1}: {text!r} [{stats[0].text}] ({how})")


def check_model_name(driver, url):
    """The header shows the id from GET /v1/models (skipped when the server wants an API key)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=10) as res:
            model = json.load(res)["data"][0]["id"]
    except Exception as e:  # noqa: BLE001 - e.g. 401 under --api-key: the page would prompt
        print(f"model name check skipped: {e}")
        return
    deadline = time.time() + 15
    while driver.find_element(By.ID, "model").text != model:
        if time.time() > deadline:
            raise Failure(f"header #model shows {driver.find_element(By.ID, 'model').text!r}, "
                          f"expected {model!r}")
        time.sleep(0.1)


def run(driver, args):
    driver.get(args.url)
    for element_id in ("input", "send", "stop", "new-chat", "messages", "model"):
        if not driver.find_elements(By.ID, element_id):
            raise Failure(f"page has no #{element_id}")
    net = NetworkLog(driver)
    check_model_name(driver, args.url)
    # Small replies keep the test quick on a CPU model: set max_tokens through the settings panel.
    driver.find_element(By.CSS_SELECTOR, "#settings summary").click()
    max_tokens = driver.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys(str(args.max_tokens))
    driver.execute_script(WATCH_JS)

    send(driver, FIRST, use_enter=True)
    el, reply1 = wait_reply(driver, 0, args.timeout)
    check_reply(driver, net, 0, reply1, el)

    send(driver, SECOND, use_enter=False)
    el, reply2 = wait_reply(driver, 1, args.timeout)
    check_reply(driver, net, 1, reply2, el)

    (_, body1), (_, body2) = net.wait_chat_posts(2)
    if body1.get("stream") is not True or not (body1.get("stream_options") or {}).get("include_usage"):
        raise Failure(f"first request lacks stream: true / stream_options.include_usage: {body1}")
    if body1.get("max_tokens") != args.max_tokens:
        raise Failure(f"first request's max_tokens is {body1.get('max_tokens')!r}, expected {args.max_tokens}")
    want = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": reply1},
            {"role": "user", "content": SECOND}]
    got = [{"role": m.get("role"), "content": m.get("content")} for m in body2.get("messages", [])]
    if got[-3:] != want:
        raise Failure("second request's messages do not end with the conversation so far:\n"
                      f"  expected ...{json.dumps(want, ensure_ascii=False)}\n  got {json.dumps(got, ensure_ascii=False)}")
    print("second request carried the whole conversation")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the server's root, e.g. http://127.0.0.1:8080/")
    ap.add_argument("--screenshot", help="save a screenshot here when the test fails")
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for each reply")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()

    profile_dir = tempfile.mkdtemp(prefix="web-chat-profile-")
    driver = None
    try:
        driver = start_browser(args, profile_dir)
        run(driver, args)
        print("PASS: web chat")
        return 0
    except (Failure, WebDriverException) as e:
        print(f"FAIL: web chat: {e}", file=sys.stderr)
        if driver is not None:
            try:
                for entry in driver.get_log("browser"):  # the page's console: JS errors show here
                    print(f"  console: {entry['level']} {entry['message']}", file=sys.stderr)
                if args.screenshot:
                    driver.save_screenshot(args.screenshot)
                    print(f"  screenshot: {args.screenshot}", file=sys.stderr)
            except WebDriverException as e2:
                print(f"  (no console log or screenshot: {e2.msg})", file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
