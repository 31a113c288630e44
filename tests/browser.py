"""A real headless browser for the web UIs' tests (Debian's chromium + chromedriver, via selenium)
and what every page is checked for: accessibility with axe-core (no violation), no horizontal
scroll from 320 CSS pixels wide (WCAG 1.4.10 Reflow), and screenshots at a phone's and a desktop's
width kept as test artefacts.

One browser per test session (the `browser` fixture of conftest.py; a start costs seconds). The
viewport is set with the DevTools protocol rather than the window size: a window cannot be made
narrower than ~500 px, a viewport can, and its width is then exact.

axe-core (MPL-2.0) is not committed: it is fetched from the npm registry at test time (pinned
version and integrity, tests/npm_packages.py); from the first check on, the browser loads it into
every page it opens.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from .npm_packages import npm_file

CHROMIUM, CHROMEDRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",  # the same layout width with or without a vertical scrollbar
    "--lang=fr-FR",  # date pickers and the like as French users see them
)
DESKTOP = (1280, 900)
SCREENSHOT_WIDTHS = (390, 1280)  # a current phone, a laptop
MAX_SCREENSHOT_HEIGHT = 16_000  # full pages, within what Chromium renders in one capture

# `npm view axe-core@4.10.3 dist.integrity`
AXE_PACKAGE, AXE_VERSION = "axe-core", "4.10.3"
AXE_INTEGRITY = "sha512-Xm7bpRXnDSX2YE2YFfBk2FnF0ep6tmG7xPh8iHee8MIcrgq762Nkce856dYtJYLkuIoYZvGfTs/PbZhideTcEg=="
REPOSITORY = Path(__file__).resolve().parent.parent


# -- the browser -----------------------------------------------------------------------------------
def browser_installed() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def start_browser(profile_dir: Path):
    """A headless Chromium at the desktop viewport, its profile in `profile_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    driver.set_script_timeout(60)
    set_viewport(driver, *DESKTOP)
    return driver


def set_viewport(driver, width: int, height: int) -> None:
    """The page's layout viewport in CSS pixels, then one rendered frame so layout has settled."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    wait_for_layout(driver)


def wait_for_layout(driver) -> None:
    # two animation frames: the first runs before the new layout is painted, the second after
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));"
    )


def page_height(driver) -> int:
    return driver.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);"
    )


# -- accessibility -----------------------------------------------------------------------------------
@functools.cache
def axe_source() -> str:
    return npm_file(AXE_PACKAGE, AXE_VERSION, AXE_INTEGRITY, "axe.min.js").read_text(encoding="utf-8")


def _preload_axe(driver) -> None:
    """axe-core in the current page and, from now on, in every page this browser opens before the
    page's own scripts (sending its 550 kB source with each check cost a second a page)."""
    source = axe_source()
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})
    driver.execute_script(source)


def axe_violations(driver, rules: list[str] | None = None) -> list[dict]:
    """axe-core's violations on the current page: all its default rules (WCAG 2.x A/AA and best
    practices), or only the rule ids in `rules`. Each: {"id", "impact", "help", "targets"} where
    targets are the CSS selectors of the offending nodes."""
    if not driver.execute_script("return typeof window.axe === 'object'"):
        _preload_axe(driver)
    options = {"runOnly": {"type": "rule", "values": list(rules)}} if rules else {}
    outcome = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, arguments[0])"
        "  .then(r => done({violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "                   targets: v.nodes.map(n => n.target.join(' '))}))}))"
        "  .catch(e => done({error: String(e)}));",
        options,
    )
    if "error" in outcome:
        raise RuntimeError(f"axe-core failed on {driver.current_url}: {outcome['error']}")
    return outcome["violations"]


def assert_accessible(driver, page_name: str, rules: list[str] | None = None) -> None:
    """Fails listing every axe-core violation of the current page (rule, impact, nodes)."""
    violations = axe_violations(driver, rules)
    assert not violations, f"{page_name} ({driver.current_url}): {len(violations)} axe-core violation(s)\n" + "\n".join(
        f"  - {v['id']} [{v['impact']}] {v['help']}: {', '.join(v['targets'][:5])}" for v in violations
    )


def assert_no_dangling_aria_references(driver) -> None:
    """Every id named by an aria-describedby, aria-labelledby or aria-controls is on the page (axe
    only flags a reference with no existing id as "to review", not as a violation)."""
    dangling = driver.execute_script(_DANGLING_REFERENCES)
    assert not dangling, f"{driver.current_url}: ARIA references to absent ids: {dangling}"


_DANGLING_REFERENCES = """
const found = [];
for (const attr of ['aria-describedby', 'aria-labelledby', 'aria-controls'])
  for (const el of document.querySelectorAll('[' + attr + ']'))
    for (const id of el.getAttribute(attr).split(/\\s+/).filter(Boolean))
      if (!document.getElementById(id)) found.push((el.id || el.tagName.toLowerCase()) + ' ' + attr + '=' + id);
return found;
"""


def assert_no_horizontal_scroll(driver, width: int = 320) -> None:
    """The current page reflows at `width` CSS px: scrollWidth <= clientWidth, nothing sticks out
    sideways (the failure names the elements past the edge)."""
    set_viewport(driver, width, DESKTOP[1])
    try:
        scroll_width, client_width, past_the_edge = driver.execute_script(_OVERFLOW)
    finally:
        set_viewport(driver, *DESKTOP)
    assert scroll_width <= client_width, (
        f"{driver.current_url} at {width} px: scrolls sideways ({scroll_width} > {client_width} px); "
        f"elements past the edge: {past_the_edge}"
    )


# the document's widths, and the elements whose right edge is past the viewport (innermost ones,
# to say what to fix)
_OVERFLOW = """
const root = document.documentElement, edge = root.clientWidth, found = [];
for (const el of document.body.querySelectorAll('*')) {
  const box = el.getBoundingClientRect();
  if (box.right > edge + 0.5 && ![...el.children].some(c => c.getBoundingClientRect().right > edge + 0.5))
    found.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
               (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : '') +
               ' (' + Math.round(box.right) + ' px)');
}
return [root.scrollWidth, edge, found.slice(0, 10)];
"""


# -- screenshots -----------------------------------------------------------------------------------
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at: $TEST_ARTIFACTS, else test-artifacts/ at the
    repository's root (ignored by git)."""
    path = Path(os.environ.get("TEST_ARTIFACTS") or REPOSITORY / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshots(driver, name: str) -> list[Path]:
    """Full-page PNGs of the current page at 390 and 1280 px wide: <artifacts>/<name>-390.png and
    <name>-1280.png. The viewport is back at the desktop size afterwards."""
    saved = []
    try:
        for width in SCREENSHOT_WIDTHS:
            set_viewport(driver, width, DESKTOP[1])
            set_viewport(driver, width, min(max(page_height(driver), DESKTOP[1]), MAX_SCREENSHOT_HEIGHT))
            path = artifacts_dir() / f"{name}-{width}.png"
            if not driver.save_screenshot(str(path)):
                raise RuntimeError(f"could not save {path}")
            saved.append(path)
    finally:
        set_viewport(driver, *DESKTOP)
    return saved


def check_page(driver, name: str) -> None:
    """Everything a page of the web UIs must pass, and its screenshots (taken first, so a failing
    page can be looked at)."""
    screenshots(driver, name)
    assert_no_horizontal_scroll(driver)
    assert_accessible(driver, name)
    assert_no_dangling_aria_references(driver)
