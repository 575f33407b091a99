"""End to end in a real headless browser: `hearth serve --dashboard` (what `make up` runs), Debian's chromium
driven by Selenium: create a function through the form, invoke it from the test panel, see the result and the
invocation in the charts, a screenshot of every page; then Ctrl-C stops the API and the dashboard."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from hearth.testing import REPO, HearthServer, free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT_DIR = REPO / "test-output"  # as tests/conftest.py
WAIT_S = 90.0  # a page under a loaded 2-core machine can take a while to render
T = TypeVar("T")


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        pytest.skip(f"{missing} not installed (Debian's chromium, chromium-driver: scripts/install-system.sh)")
    return browser, driver


@pytest.fixture
def stack(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[tuple[HearthServer, str]]:
    """The API and the dashboard, started together by `hearth serve --dashboard`."""
    chromium_paths()
    port = free_port()
    server = HearthServer(tmp_path / "data", args=["--dashboard", "--dashboard-port", str(port)])
    server.start()
    url = f"http://127.0.0.1:{port}"
    until(lambda: httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200, 60, "the dashboard to start")
    yield server, url
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, "--window-size=1440,3000", "--hide-scrollbars"]:
        options.add_argument(flag)
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def until(check: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, WebDriverException) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def page_text(driver: WebDriver) -> str:
    return str(driver.execute_script("return document.body.innerText"))


def settled(driver: WebDriver) -> None:
    """The script run that the last action caused has finished (the app says notRunning)."""
    time.sleep(0.5)
    until(
        lambda: (
            driver.find_element(By.CSS_SELECTOR, '[data-testid="stApp"]').get_attribute("data-test-script-state")
            == "notRunning"
        ),
        WAIT_S,
        "the app to finish its run",
    )


def wait_text(driver: WebDriver, text: str) -> None:
    until(lambda: text in page_text(driver), WAIT_S, f"{text!r} on the page")


def field(driver: WebDriver, tag: str, label: str) -> WebElement:
    return until(lambda: driver.find_element(By.CSS_SELECTOR, f'{tag}[aria-label="{label}"]'), WAIT_S, label)


def button(driver: WebDriver, label: str) -> WebElement:
    xpath = f'//button[.//*[normalize-space(text())="{label}"]]'
    return until(lambda: driver.find_element(By.XPATH, xpath), WAIT_S, f"the {label!r} button")


def editor_text(driver: WebDriver) -> str:
    """The text the Ace code editor shows (it lives in the component's iframe)."""
    frames = driver.find_elements(By.CSS_SELECTOR, 'iframe[title*="code_editor"]')
    if not frames:
        return ""
    driver.switch_to.frame(frames[0])
    try:
        return str(
            driver.execute_script("const l = document.querySelector('.ace_text-layer'); return l ? l.innerText : ''")
        )
    finally:
        driver.switch_to.default_content()


def chart_totals(driver: WebDriver, title: str) -> float:
    """The sum of the first trace of each Plotly chart titled `title` (the figure the browser drew)."""
    script = """
        return Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot'))
          .filter(el => el.layout && el.layout.title && String(el.layout.title.text).includes(arguments[0]))
          .map(el => (el.data[0].y || []).reduce((a, b) => a + (b || 0), 0));
    """
    totals = driver.execute_script(script, title)
    return max(totals) if totals else -1


def shot(driver: WebDriver, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def dashboard_pids(pid: int) -> list[int]:
    """The Streamlit processes among the children of process `pid`."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return [p for p in pids if b"streamlit" in Path(f"/proc/{p}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_create_invoke_and_watch_in_a_real_browser_then_ctrl_c_stops_both(
    stack: tuple[HearthServer, str], browser: WebDriver, request: pytest.FixtureRequest
) -> None:
    server, url = stack
    out = OUTPUT_DIR / "dashboard" / request.node.name
    name = "browser-hello"

    # New function: a starter template is in the code editor; type a name and create it
    browser.get(f"{url}/new")
    wait_text(browser, "New function")
    settled(browser)
    until(lambda: "def handler(event, context):" in editor_text(browser), WAIT_S, "the template in the code editor")
    name_input = field(browser, "input", "Name")
    name_input.send_keys(name, Keys.TAB)
    settled(browser)
    time.sleep(1.0)  # let the Ace editor paint its highlighting for the screenshot
    shot(browser, out, "1-new-function")
    button(browser, "Create function").click()

    # Function detail: the new function's page
    until(lambda: "/function" in browser.current_url and name in browser.current_url, WAIT_S, "the detail page")
    wait_text(browser, f"Created {name}, version 1")
    settled(browser)
    function = server.client.get(f"/api/functions/{name}").json()
    assert function["version"] == 1 and "def handler" in function["code"]
    # Plotly draws after the script run ends: wait for the chart, then it must show no calls yet
    until(lambda: chart_totals(browser, "Request volume") >= 0, WAIT_S, "the request volume chart")
    assert chart_totals(browser, "Request volume") == 0

    event = field(browser, "textarea", "Event (JSON)")
    event.send_keys(Keys.CONTROL, "a")
    event.send_keys(Keys.DELETE)
    event.send_keys('{"who": "browser"}')
    event.send_keys(Keys.CONTROL, Keys.ENTER)
    settled(browser)
    button(browser, "Invoke").click()
    wait_text(browser, "200 OK")
    settled(browser)
    text = page_text(browser)
    assert '"hello": "browser"' in text, text[-2000:]
    assert "greeting browser" in text  # the handler's print, from the invocation's logs
    # the invocation appears in the charts the browser drew (this run, or the next auto-refresh)
    until(lambda: chart_totals(browser, "Request volume") == 1, WAIT_S, "the invocation in the request chart")
    assert chart_totals(browser, "Cold starts") >= 0
    records = server.client.get("/api/invocations", params={"function": name}).json()["invocations"]
    assert [r["status"] for r in records] == ["ok"]
    settled(browser)
    shot(browser, out, "2-function-detail")

    # Overview: the platform totals and charts count it too
    browser.get(f"{url}/")
    wait_text(browser, "Busiest functions")
    settled(browser)
    until(lambda: chart_totals(browser, "Request volume") == 1, WAIT_S, "the invocation in the overview chart")
    shot(browser, out, "3-overview")

    # Functions: the table
    browser.get(f"{url}/functions")
    wait_text(browser, "1 of 1 functions")
    settled(browser)
    shot(browser, out, "4-functions")

    # Edit function: the form with the current version
    browser.get(f"{url}/edit?function={name}")
    wait_text(browser, f"Edit {name}")
    wait_text(browser, "Version 1")
    settled(browser)
    until(lambda: 'print(f"greeting {who}")' in editor_text(browser), WAIT_S, "the function's code in the editor")
    shot(browser, out, "5-edit-function")

    # type into the code editor and save: a new version with that code
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, 'iframe[title*="code_editor"]'))
    browser.find_element(By.CSS_SELECTOR, ".ace_content").click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.END).key_up(Keys.CONTROL).perform()
    ActionChains(browser).send_keys(Keys.ENTER, "# edited in the browser").perform()
    browser.switch_to.default_content()
    time.sleep(1.0)  # the editor reports its text after a 250 ms pause in typing
    settled(browser)
    button(browser, "Save (new version)").click()
    wait_text(browser, f"Saved {name}: now version 2")
    function = server.client.get(f"/api/functions/{name}").json()
    assert function["version"] == 2
    assert function["code"].rstrip().endswith("# edited in the browser"), function["code"]

    # Ctrl-C (SIGINT to `hearth serve` alone) stops the API and the dashboard
    assert server.proc is not None
    children = dashboard_pids(server.proc.pid)
    assert children, "the dashboard should be a child of hearth serve"
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=60) in (0, 128 + signal.SIGINT)
    assert not any(alive(pid) for pid in children), "the dashboard outlived hearth serve"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/_stcore/health", timeout=2)


def test_sigterm_stops_the_api_and_the_dashboard(tmp_path: Path, runtime_images: dict[str, str]) -> None:
    port = free_port()
    server = HearthServer(tmp_path / "data", args=["--dashboard", "--dashboard-port", str(port)])
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        until(lambda: httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200, 60, "the dashboard")
        assert server.proc is not None
        children = dashboard_pids(server.proc.pid)
        assert len(children) == 1
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) in (0, 128 + signal.SIGTERM)
        assert not any(alive(pid) for pid in children), "the dashboard outlived hearth serve"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/_stcore/health", timeout=2)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{server.base_url}/healthz", timeout=2)
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
