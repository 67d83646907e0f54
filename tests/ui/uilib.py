"""The browser tier's Chromium (Debian's, driven by Selenium) and the Label Studio pages it goes through.

Every step is screenshotted into reports/ui/ (numbered in the order taken), and every browser's console and
network events are kept, so a test can check them and reports/ui/ shows them afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import shutil
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from labelstack_testlib import REPO, JsonValue, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPORTS = REPO / "reports" / "ui"
# --no-sandbox because the suites run as root; the background-networking group keeps Chromium from calling
# Google's services, which a closed network refuses (each refusal a console error that says nothing about Label
# Studio). --disable-http2: Chromium closes every HTTP/2 session, requests in flight included, whenever an
# interface of the host comes or goes, which Docker does each time any stack on the machine starts or stops a
# container; over HTTP/1.1 only requests still waiting for a connection fail. The proxy's HTTP/2 is not what
# this tier tests.
CHROMIUM_FLAGS = (
    "--headless",
    "--disable-http2",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
STEP_TIMEOUT = 30.0  # seconds for a page, a dialog or a saved annotation to show on a busy machine
POLL_INTERVAL = 0.25
# With the proxy on, a page may use nothing else: http: or ws: would be mixed content (blocked or leaking).
# chrome: and chrome-untrusted: are Chromium's own pages (the new tab a session starts with, and the frames in
# it), never the network.
SECURE_SCHEMES = frozenset({"https", "wss", "data", "blob", "chrome", "chrome-untrusted"})
# Console errors a healthy stack shows all the same; each is a regex on the message, and why it is allowed.
ALLOWED_CONSOLE_ERRORS = {
    r"/heidi-tips - Failed to load resource: the server responded with a status of 404": (
        "Label Studio 1.23.2's own 'Did you know?' tips widget asks for /heidi-tips, which its open-source server "
        "does not route; the widget then shows its built-in tips"
    ),
}
USER_MENU = ".lsf-menu-header__user"  # the avatar top right: a page shows it to a logged-in user only
CREATE_PROJECT = "button[aria-label='Create new project']"  # on the Projects page, with or without projects
# How Chromium fails requests when an interface of the host comes or goes (see --disable-http2 above): the
# page's errors then say nothing about Label Studio, and the check says so, to rerun.
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
T = TypeVar("T")


def button_xpath(label: str) -> str:
    return f"//button[normalize-space(.)='{label}']"


def proxy_key_pin(url: str, ca_bundle: str) -> str:
    """The key of the certificate `url` presents, as Chromium's --ignore-certificate-errors-spki-list takes it.

    Chromium on Linux trusts only its own NSS database, not the CA the deploy generated. Python verifies the
    certificate first (chain to that CA, host name), then Chromium accepts that one key and no other.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=ca_bundle)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate, f"{url} presented no certificate"
    key = x509.load_der_x509_certificate(certificate).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Logs:
    """What one browser logged: console entries and the network events of its pages."""

    console: list[dict[str, JsonValue]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URL of every request and WebSocket the pages opened
    documents: list[tuple[str, int]] = field(default_factory=list)  # (URL, HTTP status) of every page loaded
    failed: list[str] = field(default_factory=list)  # requests that got no response, with Chromium's reason

    def since(self, mark: Logs) -> Logs:
        """The entries after `mark` (an earlier copy of these logs)."""
        return Logs(
            self.console[len(mark.console) :],
            self.requests[len(mark.requests) :],
            self.documents[len(mark.documents) :],
            self.failed[len(mark.failed) :],
        )

    def copy(self) -> Logs:
        return self.since(Logs())

    def problems(self, https_only: bool, typed: set[str]) -> list[str]:
        """Console errors not allowed, and (with `https_only`) requests not over TLS except the URLs typed."""
        found = [
            f"console error: {entry['message']}"
            for entry in self.console
            if entry["level"] == "SEVERE"
            and not any(re.search(p, str(entry["message"])) for p in ALLOWED_CONSOLE_ERRORS)
        ]
        if any(NETWORK_CHANGED in failure for failure in self.failed):
            found.append(f"{NETWORK_CHANGED}: this host's network changed under Chromium (Docker?); rerun when quiet")
        if https_only:
            found += [
                f"not over TLS: {url}"
                for url in self.requests
                if urlsplit(url).scheme not in SECURE_SCHEMES and url not in typed
            ]
        return found


@dataclass
class Browser:
    """One headless Chromium with its own profile (cookies), screenshots and logs."""

    name: str
    driver: webdriver.Chrome
    base_url: str
    downloads: Path
    shots: Callable[[], int]  # the next screenshot number, shared by all browsers of the session
    logs: Logs = field(default_factory=Logs)
    checked: Logs = field(default_factory=Logs)  # the logs as of the last check (see ui/conftest.py)
    typed: set[str] = field(default_factory=set)  # URLs opened as a user types them, not requested by a page
    _urls: dict[str, str] = field(default_factory=dict)  # Chromium's request id -> URL

    # ------------------------------------------------------------ navigation, screenshots, logs

    def open(self, path_or_url: str) -> None:
        """Go to a path of the deployment (or a whole URL), as typed into the address bar."""
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        self.typed.add(url)
        self.driver.get(url)

    def step(self, name: str) -> Path:
        """Screenshot the page as reports/ui/<NNN>-<browser>-<name>.png (and take in the logs so far)."""
        self.collect()
        path = REPORTS / f"{self.shots():03d}-{self.name}-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
        return path

    def collect(self) -> Logs:
        """Move the browser's new console and network entries into `logs` (Chromium hands each out once)."""
        self.logs.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            params = event.get("params", {})
            if event["method"] == "Network.requestWillBeSent":
                self._urls[params["requestId"]] = params["request"]["url"]
                self.logs.requests.append(params["request"]["url"])
            elif event["method"] == "Network.webSocketCreated":
                self.logs.requests.append(params["url"])
            elif event["method"] == "Network.responseReceived" and params.get("type") == "Document":
                self.logs.documents.append((params["response"]["url"], params["response"]["status"]))
            elif event["method"] == "Network.loadingFailed":  # leaving a page cancels its requests: no problem
                url = self._urls.get(params["requestId"], f"(Chromium's own request {params['requestId']})")
                self.logs.failed.append(f"{url[:200]}: {params['errorText']}")
        return self.logs

    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    def text(self) -> str:
        """The page's visible text."""
        return str(self.driver.execute_script("return document.body.innerText"))

    # ------------------------------------------------------------ waiting and acting

    def wait(self, check: Callable[[], T | None], message: str, timeout: float = STEP_TIMEOUT) -> T:
        return wait_for(check, timeout, message, interval=POLL_INTERVAL)

    def element(self, by: str, selector: str, timeout: float = STEP_TIMEOUT) -> WebElement:
        """The last displayed element matching (dialogs come after the page in the DOM), once there is one."""

        def displayed() -> WebElement | None:
            shown = [e for e in self.driver.find_elements(by, selector) if e.is_displayed()]
            return shown[-1] if shown else None

        return self.wait(displayed, f"{self.name}: nothing displayed matches {selector!r} on {self.path()}", timeout)

    def button(self, label: str) -> WebElement:
        return self.element(By.XPATH, button_xpath(label))

    def click(self, by: str, selector: str) -> None:
        """Click the element once it is displayed. React re-renders often: an element replaced between finding and
        clicking (StaleElementReferenceException) is found again and clicked, since the failed click did nothing."""

        def clicked() -> bool:
            self.element(by, selector).click()
            return True

        self.wait(clicked, f"{self.name}: could not click {selector!r} on {self.path()}")

    def click_button(self, label: str) -> None:
        self.click(By.XPATH, button_xpath(label))

    def fill(self, by: str, selector: str, text: str) -> None:
        """Replace an input's value by typing (select all first: React fills some inputs after rendering)."""
        field_ = self.element(by, selector)
        field_.send_keys(Keys.CONTROL, "a")
        field_.send_keys(text)

    def press(self, keys: str) -> None:
        """Type keys into the page (the focused element), as keyboard shortcuts are used."""
        ActionChains(self.driver).send_keys(keys).perform()

    def see(self, text: str, timeout: float = STEP_TIMEOUT) -> None:
        """Wait until `text` is visible on the page."""
        self.wait(lambda: text in self.text(), f"{self.name}: {text!r} never showed on {self.path()}", timeout)


@dataclass
class BrowserPool:
    """The session's browsers: started on demand, each with its own profile and downloads, quit at the end."""

    base_url: str
    workdir: Path
    key_pin: str  # '' without the proxy
    browsers: list[Browser] = field(default_factory=list)
    _shots: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        shutil.rmtree(REPORTS, ignore_errors=True)  # screenshots of an earlier run would mix with this one's
        REPORTS.mkdir(parents=True)

    def start(self, name: str) -> Browser:
        home = self.workdir / name
        profile, downloads = home / "profile", home / "downloads"
        downloads.mkdir(parents=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        if self.key_pin:
            options.add_argument(f"--ignore-certificate-errors-spki-list={self.key_pin}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        # Both paths given: Selenium looks nothing up (its Selenium Manager would try to download a driver).
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        browser = Browser(name, driver, self.base_url, downloads, lambda: next(self._shots))
        self.browsers.append(browser)
        return browser

    def quit(self) -> None:
        for browser in self.browsers:
            browser.driver.quit()


# ---------------------------------------------------------------- Label Studio's pages


def log_in(browser: Browser, email: str, password: str) -> None:
    """Fill in and send the login form."""
    browser.open("/user/login/")
    browser.fill(By.ID, "email", email)
    browser.fill(By.ID, "password", password)
    browser.step("login-form")
    browser.click(By.CSS_SELECTOR, "button.login-button")


def log_out(browser: Browser) -> None:
    """Log out from the user menu."""
    browser.click(By.CSS_SELECTOR, USER_MENU)
    browser.click(By.XPATH, "//a[normalize-space(.)='Log Out']")


def open_data_manager(browser: Browser, project_id: int) -> None:
    browser.open(f"/projects/{project_id}/data")
    browser.button("Import")  # the toolbar is there: the Data Manager has loaded


def task_counts(browser: Browser) -> tuple[int, int] | None:
    """The Data Manager's footer 'Tasks: <shown> / <total>', None until it shows."""
    match = re.search(r"Tasks:\s*(\d+)\s*/\s*(\d+)", browser.text())
    return (int(match.group(1)), int(match.group(2))) if match else None


def open_labeling(browser: Browser, project_id: int) -> int:
    """Open the labelling view from the Data Manager's 'Label All Tasks'; the id of the task it shows."""
    open_data_manager(browser, project_id)
    browser.click_button("Label All Tasks")
    return current_task_id(browser)


def current_task_id(browser: Browser, other_than: int | None = None) -> int:
    """The id the labelling view shows bottom left (waiting for one other than `other_than`)."""

    def shown() -> int | None:
        label = browser.element(By.CSS_SELECTOR, ".lsf-current-task__task-id", timeout=POLL_INTERVAL)
        task_id = int(label.text.split()[0].lstrip("#"))
        return task_id if task_id != other_than else None

    return browser.wait(shown, f"the labelling view shows no task (other than {other_than})")


def checked_choices(browser: Browser) -> list[str]:
    """The choices ticked in the labelling view, by their value (the label text without its hotkey)."""
    labels = browser.driver.find_elements(By.CSS_SELECTOR, ".lsf-choice__item:has(.ant-checkbox-wrapper-checked)")
    return [re.sub(r"\[\w+\]$", "", label.text.strip()) for label in labels]


def choice_hotkey(browser: Browser, value: str) -> str:
    """The keyboard shortcut the labelling view shows beside a choice ('Positive[1]' -> '1')."""
    label = browser.element(
        By.XPATH, f"//*[contains(@class,'lsf-choice__item')][starts-with(normalize-space(.),'{value}[')]"
    )
    match = re.fullmatch(rf"{re.escape(value)}\[(\w+)\]", label.text.strip())
    assert match, f"choice {value!r} shows no hotkey: {label.text!r}"
    return match.group(1)


def label_with_keyboard(browser: Browser, choices: dict[int, str]) -> int:
    """Tick the open task's choice (from `choices`, task id -> value) with its hotkey and submit; the task's id."""
    task_id = current_task_id(browser)
    value = choices[task_id]
    browser.press(choice_hotkey(browser, value))
    browser.wait(lambda: checked_choices(browser) == [value], f"task {task_id}: the hotkey did not tick {value!r}")
    browser.step(f"task-{task_id}-{value}")
    browser.click_button("Submit")
    current_task_id(browser, other_than=task_id)  # the next task is open: the annotation was saved
    return task_id


def choices_of(annotation: dict[str, JsonValue]) -> list[str]:
    """The choices of an annotation or prediction (as the API and the JSON export give them)."""
    return [choice for result in annotation["result"] for choice in result["value"].get("choices", [])]


def create_project_from_template(browser: Browser, title: str, group: str, template: str) -> int:
    """Create a project from the Projects page's dialog with one of Label Studio's templates; its id."""
    browser.open("/projects/")
    browser.click(By.CSS_SELECTOR, CREATE_PROJECT)
    # The dialog fills in a default name ("New Project #N") after it renders: fill() types over it.
    browser.element(By.ID, "project_name")
    browser.wait(lambda: browser.element(By.ID, "project_name").get_attribute("value"), "no default project name")
    browser.fill(By.ID, "project_name", title)
    browser.click(By.XPATH, "//*[normalize-space(text())='Labeling Setup']")
    browser.click(By.XPATH, f"//li[normalize-space(text())='{group}']")
    browser.click(
        By.XPATH, f"//li[contains(@class,'lsf-templates-list__template')][.//*[normalize-space(text())='{template}']]"
    )
    browser.button("Browse Templates")  # the template's configuration is open
    browser.step(f"create-project-{template.lower().replace(' ', '-')}")
    browser.click_button("Save")
    match = browser.wait(
        lambda: re.fullmatch(r"/projects/(\d+)/data/?", browser.path()), "saving the new project opened no Data Manager"
    )
    return int(match.group(1))


def import_file(browser: Browser, project_id: int, path: Path) -> None:
    """Upload a file with the Data Manager's Import dialog and import it."""
    open_data_manager(browser, project_id)
    browser.click_button("Import")
    browser.driver.find_element(By.CSS_SELECTOR, "input[type=file][name=file]").send_keys(str(path))
    browser.see(f"upload/{project_id}/")  # the server stored the file: the list shows the stored name
    # The dialog's Import button, top right: element() takes the last one displayed.
    browser.wait(
        lambda: browser.button("Import").get_attribute("data-waiting") == "false", "the Import button stays busy"
    )
    browser.step("import-dialog")
    browser.click_button("Import")


def connect_model(browser: Browser, project_id: int, url: str, user: str, password: str) -> None:
    """Settings -> Model -> Connect Model with basic authentication, as the README tells a user to."""
    browser.open(f"/projects/{project_id}/settings/ml")
    browser.click_button("Connect Model")
    browser.fill(By.NAME, "title", "labelstack")
    browser.fill(By.NAME, "url", url)
    browser.click_button("No Authentication")
    browser.click(By.XPATH, "//*[normalize-space(text())='Basic Authentication']")
    browser.fill(By.NAME, "basic_auth_user", user)
    browser.fill(By.NAME, "basic_auth_pass", password)
    browser.step("connect-model")
    browser.click_button("Validate and Save")


def export_json(browser: Browser, project_id: int) -> JsonValue:
    """Export with the Data Manager's Export dialog in JSON; the downloaded file, parsed."""
    open_data_manager(browser, project_id)
    browser.click_button("Export")
    selected = browser.element(By.CSS_SELECTOR, ".lsf-formats__item_selected")
    assert selected.text.split("\n")[0] == "JSON", f"the Export dialog preselects {selected.text!r}, not JSON"
    browser.step("export-dialog")
    browser.click_button("Export")  # the dialog's, below the formats

    def downloaded() -> Path | None:
        files = list(browser.downloads.iterdir())
        done = [f for f in files if f.suffix == ".json"]
        return done[0] if done and len(files) == len(done) else None  # Chromium writes *.crdownload until done

    return json.loads(browser.wait(downloaded, "the Export dialog downloaded no JSON file").read_text())
