"""The duty console in a real browser (Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver), against a real ``cems run`` and ``cems console serve`` over the session's Mosquitto
and InfluxDB: the duty officer logs in, sees an exceedance appear in the queue (polling), acknowledges it
with a note, dispatches it to the district; the district officer answers and is denied what it may not do;
the duty officer closes the case. Screenshots of the queue and the event page go to the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py
from test_compliance_live import Mqtt, minutes  # same directory (pytest prepend import mode)
from test_reliability import _free_port

pytestmark = pytest.mark.integration

REGISTRY = one_outlet(city="ack_sla_hours = 2.0\n", enterprise='sector = "power"\n')
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        msg = f"{', '.join(missing)} missing: scripts/setup installs Debian's chromium and chromium-driver"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cems", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def stack(tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str) -> Iterator[dict[str, Any]]:
    """``cems run`` and ``cems console serve`` as subprocesses, with three accounts made by the CLI."""
    _need_browser()
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    env = {**os.environ, "CEMS_STATE_DIR": str(tmp_path / "state")}
    console_dir = tmp_path / "console"
    for user, role, scope, name in [
        ("zhangsan", "duty", None, "张三"),
        ("jingxiu", "district", "130602", "竞秀区分局李四"),
        ("daqiban", "viewer", None, "大气办"),
        ("wanggong", "enterprise", "E001", "示例热电王工"),
    ]:
        args = ["console", "user", "add", user, "--role", role, "--name", name, "--password-stdin"]
        args += ["--console-dir", str(console_dir)] + (["--scope", scope] if scope else [])
        done = subprocess.run(
            [sys.executable, "-m", "cems", *args], input=PASSWORD + "\n", env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    health, port = _free_port(), _free_port()
    common = ["--mqtt-url", mosquitto.url, "--influx-url", influxdb.url, "--influx-db", influx_db]
    run_log, console_log = tmp_path / "run.log", tmp_path / "console.log"
    run = _spawn(
        ["run", "--config", str(reg), *common, "--client-id", f"cems-b-{uuid.uuid4().hex[:6]}", "--health-port",
         str(health)], env, run_log,
    )  # fmt: skip
    console = _spawn(
        ["console", "serve", "--config", str(reg), "--port", str(port), "--console-dir", str(console_dir),
         "--refresh", "2", "--http-cookies", *common], env, console_log,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{health}/healthz", run, run_log)
        _wait_http(f"http://127.0.0.1:{port}/login", console, console_log)
        time.sleep(0.5)  # the ingester's subscriptions
        yield {"url": f"http://127.0.0.1:{port}", "mosquitto": mosquitto, "tmp": tmp_path}
    finally:
        _stop(console)
        _stop(run)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        "--lang=zh-CN",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def test_duty_officer_and_district_work_a_case_in_the_browser(stack: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, shots = stack["url"], stack["tmp"]
    wait = WebDriverWait(browser, 30)

    def login(user: str) -> None:
        browser.get(url + "/login")
        browser.find_element(By.ID, "username").send_keys(user)
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "whoami")))

    def logout() -> None:
        browser.find_element(By.CSS_SELECTOR, "form.who button").click()
        wait.until(ec.presence_of_element_located((By.ID, "username")))

    def act(action: str, note: str) -> str:
        form = browser.find_element(By.ID, f"form-{action}")
        form.find_element(By.NAME, "note").send_keys(note)
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait.until(ec.staleness_of(form))  # the next page (the redirect after the ingester's answer)
        flash = wait.until(ec.presence_of_element_located((By.ID, "flash")))
        return str(flash.text)

    # the duty officer's queue is empty; an exceedance appears by itself (the page polls)
    login("zhangsan")
    assert "张三（值班员）" in browser.find_element(By.ID, "whoami").text
    assert "没有待办事件" in browser.find_element(By.ID, "queue-rows").text
    pub = Mqtt(stack["mosquitto"].url)
    try:
        pub.publish_docs(minutes(0, 2 * 60 + 9))  # H1 (SO2 corrected 50 > 35) exceeds, closed by H2's data
    finally:
        pub.close()
    row = wait.until(ec.presence_of_element_located((By.XPATH, "//tr[@data-event][td/a[contains(., '小时均值超标')]]")))
    assert "示例热电有限公司" in row.text and "1#机组排放口" in row.text and "待签收" in row.text
    assert "剩余 1小时5" in row.text  # the 2-hour SLA, counted from the ingester's alert
    browser.save_screenshot(str(shots / "queue.png"))

    # acknowledge with a note, then dispatch to the district
    row.find_element(By.CSS_SELECTOR, "a").click()
    wait.until(ec.presence_of_element_located((By.ID, "form-ack")))
    assert "已确认" in act("ack", "已电话通知企业核查")
    assert "已签收" in browser.find_element(By.ID, "case-status").text
    assert "已确认" in act("dispatch", "请核查超标原因，24小时内反馈")
    assert "督办中 → 竞秀区" in browser.find_element(By.ID, "case-status").text
    event_url = browser.current_url
    logout()

    # the district answers; it may not close (the crafted request is refused), a viewer does nothing
    login("jingxiu")
    browser.get(event_url)
    assert {f.get_attribute("id") for f in browser.find_elements(By.CSS_SELECTOR, "form.action")} == {"form-feedback"}
    assert "已确认" in act("feedback", "脱硫塔循环泵故障，已于当日修复")
    assert "已反馈" in browser.find_element(By.ID, "case-status").text
    browser.execute_script(
        "var f = document.getElementById('form-feedback') || document.forms[1];"
        "f.querySelector('[name=action]').value = 'close'; f.querySelector('[name=note]').value = '自行办结';"
        "f.submit();"
    )
    denied = wait.until(ec.presence_of_element_located((By.ID, "denied")))
    assert "无权限" in denied.text
    browser.save_screenshot(str(shots / "denied.png"))
    logout()
    login("daqiban")
    browser.get(event_url)
    assert browser.find_elements(By.CSS_SELECTOR, "form.action") == []
    assert "没有您可办理的操作" in browser.find_element(By.ID, "no-actions").text
    logout()

    # the duty officer closes the case; the history shows every step with who and the note
    login("zhangsan")
    browser.get(event_url)
    assert "已确认" in act("close", "整改到位，办结")
    assert "已办结" in browser.find_element(By.ID, "case-status").text
    history = browser.find_element(By.ID, "history").text
    for words in ("签收", "已电话通知企业核查", "督办 → 竞秀区", "反馈", "竞秀区分局李四", "办结", "整改到位"):
        assert words in history, words
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar.over")) == 1
    browser.save_screenshot(str(shots / "event.png"))
    browser.get(url + "/")
    assert browser.find_elements(By.XPATH, "//tr[@data-event][td/a[contains(., '小时均值超标')]]") == []


def test_an_enterprise_submits_a_mark_in_the_browser(stack: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, shots = stack["url"], stack["tmp"]
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/login")
    browser.find_element(By.ID, "username").send_keys("wanggong")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.ID, "whoami")))
    browser.find_element(By.LINK_TEXT, "标记与申报").click()
    form = wait.until(ec.presence_of_element_located((By.ID, "form-mark-MN0001")))
    # its outlet's industry (coal power) and the device marks only
    codes = {str(o.get_attribute("value")) for o in form.find_elements(By.CSS_SELECTOR, "select[name=type] option")}
    assert "cp_fault" in codes and not any(c.startswith("wi_") for c in codes)
    Select(form.find_element(By.NAME, "type")).select_by_value("cp_fault")  # the period: the last two hours
    form.find_element(By.NAME, "reason").send_keys("引风机跳闸，已抢修")
    form.find_element(By.NAME, "attachment").send_keys("DOC-2026-118")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(ec.staleness_of(form))
    flash = wait.until(ec.presence_of_element_located((By.ID, "flash"))).text
    assert flash.startswith("工况标记已受理：记录 "), flash
    record = flash.split("记录 ")[1].strip()
    row = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-record="{record}"]')))
    assert "已受理" in row.text and "引风机跳闸" in row.text and "示例热电王工（企业 wanggong）" in row.text
    browser.save_screenshot(str(shots / "marks.png"))
