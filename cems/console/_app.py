"""The duty console's web application (Starlette; server-rendered Jinja2 pages, a little vanilla JS for the
queue's polling). :func:`create_app` takes :class:`ConsoleSettings`.

Reads come from InfluxDB (what the ingesters write); actions go to the ingester as commands over MQTT
(:func:`cems.service.compliance.send_action`: the same asyncio MQTT client as the CLI, one short clean-session
connection per action — actions are a few an hour, so there is no connection state to keep or lose, and the
reply topic carries the request id) and the page shows the ingester's confirmation; so do an enterprise's marks
(:func:`cems.service.compliance.submit_mark` on the command topic). Nothing is kept in the console but the
accounts, their server-side sessions and the failed logins (:class:`UserStore`'s SQLite): a restart loses
nothing, several ingesters behind one broker work.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cems.console import _data as data
from cems.console._access import can_act, can_mark, can_see, sees_district, sees_outlet
from cems.console._users import ROLE_LABELS, User, UserStore
from cems.errors import CemsError, CsrfError
from cems.model import BEIJING
from cems.protocol.mark import MarkKind, mark_payload
from cems.registry import OutletInfo, Registry
from cems.service.compliance import ACTION_LABELS, list_marks, send_action, submit_mark
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import influx_query

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
SESSION_COOKIE: Final = "cems_console"
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _now() -> datetime:
    return datetime.now(BEIJING)


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything the console needs (``cems console serve`` builds it from its options)."""

    registry: Registry
    influx_url: str
    influx_db: str
    mqtt: MqttSettings
    users_file: Path
    #: Signs the session cookies (itsdangerous, via Starlette's SessionMiddleware); keep it secret.
    secret_key: str = field(repr=False)
    #: Send the session cookie only over HTTPS (behind the TLS reverse proxy; docs/console.md).
    secure_cookies: bool = True
    session_hours: float = 12.0
    #: How long an action waits for the ingester's confirmation.
    confirm_s: float = 10.0
    #: How often the queue page reloads its rows.
    refresh_s: int = 15
    #: Login throttling: at most this many failures per user name and per client address in the window.
    max_failures: int = 5
    failure_window_s: float = 900.0
    clock: Callable[[], datetime] = _now


class Throttle:
    """Failed logins per key (user name, client address) in a sliding window, kept in the accounts file
    (:meth:`UserStore.record_failure`): a restart of the console does not reset a lockout."""

    def __init__(self, store: UserStore, limit: int, window_s: float) -> None:
        self.store, self.limit, self.window_s = store, limit, window_s

    def blocked(self, *keys: str) -> bool:
        since = time.time() - self.window_s
        return any(self.store.failures(k, since) >= self.limit for k in keys)

    def fail(self, *keys: str) -> None:
        now = time.time()
        self.store.record_failure(keys, now, now - self.window_s)

    def clear(self, key: str) -> None:
        self.store.clear_failures(key)


class SecurityHeaders:
    """Headers on every response: no framing, no sniffing, scripts and styles from the console only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
                    ),
                    (b"cache-control", b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: ConsoleSettings) -> Starlette:
    """The console as an ASGI application."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    users = UserStore(settings.users_file)
    throttle = Throttle(users, settings.max_failures, settings.failure_window_s)
    names = data.Names(settings.registry)
    sla_hours = settings.registry.city.ack_sla_hours
    catalog = settings.registry.mark_catalog

    def query(text: str, epoch: str | None) -> list[dict[str, Any]]:
        return influx_query(settings.influx_url, settings.influx_db, text, epoch=epoch)

    async def q(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def csrf_token(request: Request) -> str:
        tok = request.session.get("csrf")
        if not isinstance(tok, str):
            tok = secrets.token_urlsafe(32)
            request.session["csrf"] = tok
        return tok

    async def check_csrf(request: Request) -> dict[str, str]:
        form = await request.form()
        sent = form.get("csrf_token")
        tok = request.session.get("csrf")
        if not isinstance(sent, str) or not isinstance(tok, str) or not hmac.compare_digest(sent, tok):
            raise CsrfError("CSRF")
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def current_user(request: Request) -> User | None:
        name = request.session.get("user")
        started = request.session.get("since")
        sid = request.session.get("sid")
        if not isinstance(name, str) or not isinstance(started, int | float) or not isinstance(sid, str):
            return None
        if time.time() - started > settings.session_hours * 3600:
            request.session.clear()
            return None
        if await q(users.session_user, sid) != name:  # logged out (or ended) on the server: the cookie is dead
            request.session.clear()
            return None
        user: User | None = await q(users.get, name)
        if user is None or user.disabled or started < user.changed_ts:  # disabled, or password changed since
            request.session.clear()
            return None
        return user

    async def page(request: Request, name: str, user: User | None, status: int = 200, **ctx: Any) -> Response:
        warning = None
        if user is not None:
            try:
                warning = await q(data.current_warning, query, settings.clock())
            except CemsError as e:
                log.warning("cannot read the warning: %s", e)
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {
                "user": user,
                "roles": ROLE_LABELS,
                "csrf": csrf_token(request),
                "warning": warning,
                "flash": flash,
                "city": settings.registry.city.name,
                "sla_hours": sla_hours,
                **ctx,
            },
            status_code=status,
        )

    def login_redirect() -> Response:
        return RedirectResponse("/login", status_code=303)

    def visible(user: User, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = settings.clock()
        return [data.present(r, names, now, sla_hours) for r in rows if can_see(user, r)]

    # -- pages ------------------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        return await page(request, "login.html", None)

    async def login(request: Request) -> Response:
        try:
            form = await check_csrf(request)
        except CsrfError:
            return await page(request, "login.html", None, 403, error="表单已过期，请重新登录")
        username = form.get("username", "").strip()[:64]
        password = form.get("password", "")[:1024]
        client = request.client.host if request.client else "?"
        keys = (f"user:{username}", f"addr:{client}")
        if await q(throttle.blocked, *keys):
            log.warning("console login of %r from %s refused: too many failures", username, client)
            return await page(request, "login.html", None, 429, error="登录失败次数过多，请15分钟后再试")
        user: User | None = await q(users.authenticate, username, password)
        if user is None:
            await q(throttle.fail, *keys)
            log.info("console login of %r from %s failed", username, client)
            return await page(request, "login.html", None, 401, error="用户名或密码错误")
        await q(throttle.clear, f"user:{username}")
        old = request.session.get("sid")
        if isinstance(old, str):
            await q(users.end_session, old)
        request.session.clear()  # a new session (and CSRF token) at login: no fixation
        sid = await q(users.open_session, user.username, settings.session_hours * 3600)
        request.session.update({"user": user.username, "since": time.time(), "sid": sid})
        log.info("console login of %s (%s) from %s", user.username, user.role, client)
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        try:
            await check_csrf(request)
        except CsrfError:
            return PlainTextResponse("CSRF token missing or wrong", status_code=403)
        sid = request.session.get("sid")
        if isinstance(sid, str):
            await q(users.end_session, sid)  # the cookie, copied or not, is refused from now on
        request.session.clear()
        return login_redirect()

    async def queue(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        rows = await q(data.load_events, query, settings.clock())
        return await page(
            request, "queue.html", user, events=visible(user, data.open_cases(rows)), refresh_s=settings.refresh_s
        )

    async def queue_rows(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return PlainTextResponse("login required", status_code=401)
        rows = await q(data.load_events, query, settings.clock())
        return templates.TemplateResponse(
            request, "_queue_rows.html", {"events": visible(user, data.open_cases(rows)), "user": user}
        )

    async def event_page(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        eid = str(request.path_params["event_id"])
        row = await q(data.load_event, query, eid)
        if row is None or not can_see(user, row):  # an event the user may not see does not exist for them
            return await page(request, "denied.html", user, 404, message="没有这个事件，或您无权查看")
        hours = await q(data.load_hours, query, row)
        actions = await q(data.load_actions, query, eid)
        ev = data.present(row, names, settings.clock(), sla_hours)
        for a in actions:
            a["dispatched_name"] = names.district(a.get("dispatched_to"))
            a["at_text"] = data.fmt_time(a["at"])
            a["deadline_text"] = data.fmt_time(a.get("deadline"))
        marks: list[dict[str, Any]] = []
        if row.get("marks"):  # the marks, declarations or repairs that touched the event (read-only here)
            recs = await q(lambda: list_marks(settings.influx_url, settings.influx_db, mn=str(row["mn"])))
            marks = data.present_marks(data.event_marks(recs, row["marks"]), catalog)
        allowed = [a for a in ("ack", "dispatch", "feedback", "send_back", "close") if can_act(user, a, row)]
        default_deadline = (settings.clock() + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M")
        return await page(
            request,
            "event.html",
            user,
            ev=ev,
            chart=data.svg_chart(hours, row["limit"]),
            hours=hours,
            actions=actions,
            allowed=allowed,
            labels=ACTION_LABELS,
            districts=settings.registry.district,
            default_deadline=default_deadline,
            marks=marks,
        )

    async def event_action(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        try:
            form = await check_csrf(request)
        except CsrfError:
            return PlainTextResponse("CSRF token missing or wrong", status_code=403)
        eid = str(request.path_params["event_id"])
        action = form.get("action", "")
        row = await q(data.load_event, query, eid)
        if row is None or not can_act(user, action, row):
            log.warning("console: %s (%s) may not %s event %s", user.username, user.role, action, eid)
            return await page(request, "denied.html", user, 403, message="您的角色无权执行此操作")
        note = form.get("note", "").strip()
        if not note:
            request.session["flash"] = {"ok": False, "text": "请填写意见（处理意见 / 督办要求 / 处理结果）"}
            return RedirectResponse(f"/events/{eid}", status_code=303)
        body: dict[str, Any] = {"action": action, "event_id": eid, "by": user.signature, "note": note[:1000]}
        if action in ("dispatch", "send_back") and form.get("deadline"):
            body["deadline"] = form["deadline"]
        if action == "dispatch" and form.get("dispatched_to"):
            body["dispatched_to"] = form["dispatched_to"]
        try:
            reply = await send_action(settings.mqtt, settings.registry.topics, body, confirm_s=settings.confirm_s)
        except (CemsError, OSError) as e:
            log.error("console: cannot send the %s of %s: %s", action, eid, e)
            reply, failure = None, f"无法连接消息服务器：{e}"
        else:
            failure = "接入服务未在规定时间内确认（操作已发送，请稍后刷新查看）"
        label = ACTION_LABELS.get(action, action)
        if reply is not None and reply.get("result") == "done":
            text = f"已确认：{label}已由接入服务记录（{data.fmt_time(reply.get('at'))}，第{reply.get('seq')}条）"
            request.session["flash"] = {"ok": True, "text": text}
        elif reply is not None:
            why = reply.get("detail") or reply.get("result")
            request.session["flash"] = {"ok": False, "text": f"{label}未被接受：{why}"}
        else:
            request.session["flash"] = {"ok": False, "text": failure}
        return RedirectResponse(f"/events/{eid}", status_code=303)

    async def silent(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        rows = await q(data.load_events, query, settings.clock())
        live = [r for r in rows if r["type"] == "data_interruption" and r["status"] == "open"]
        return await page(request, "silent.html", user, events=visible(user, live))

    async def supervision(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        label, rows = await q(data.month_supervision, settings.registry, query, settings.clock())
        rows = [r for r in rows if r["note"] or sees_district(user, r["code"])]
        return await page(request, "supervision.html", user, month=label, districts=rows)

    # -- marks, stop declarations, repairs, withdrawals (issue 14): the enterprise's ------------------------
    def outlets_of(user: User) -> list[OutletInfo]:
        infos = [i for i in settings.registry.outlets() if sees_outlet(user, i.enterprise.id, i.district.code)]
        return sorted(infos, key=lambda i: (i.district.code, i.enterprise.id, i.outlet.mn))

    async def marks_page(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        now = settings.clock()
        infos = outlets_of(user)
        recs = []
        if infos:
            one = infos[0].outlet.mn if len(infos) == 1 else None
            recs = await q(
                lambda: list_marks(settings.influx_url, settings.influx_db, mn=one, start=now - data.MARKS_LOOKBACK)
            )
        outlets = []
        for info in infos:
            own = [r for r in recs if r.mn == info.outlet.mn]
            types, decls = data.mark_types(catalog, info)
            outlets.append(
                {
                    "mn": info.outlet.mn,
                    "name": info.outlet.name,
                    "enterprise": info.enterprise.name,
                    "district": info.district.name,
                    "records": data.present_marks(own, catalog),
                    "may_mark": can_mark(user, info.enterprise.id),
                    "types": types,
                    "declarations": decls,
                    "pollutants": data.repair_pollutants(info, now),
                }
            )
        hour = now.replace(minute=0, second=0, microsecond=0)
        return await page(
            request,
            "marks.html",
            user,
            outlets=outlets,
            request_id=secrets.token_hex(8),
            default_from=(hour - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            default_to=hour.strftime("%Y-%m-%dT%H:%M"),
            default_hour=(hour - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            deadline=catalog.deadline,
        )

    def local_time(text: str) -> datetime:
        t = datetime.fromisoformat(text)
        return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)

    async def marks_submit(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return login_redirect()
        try:
            form = await check_csrf(request)
        except CsrfError:
            return PlainTextResponse("CSRF token missing or wrong", status_code=403)
        mn = form.get("mn", "")
        info = settings.registry.outlet(mn)
        if info is None or not can_mark(user, info.enterprise.id):  # the server decides, not the hidden form
            log.warning("console: %s (%s) may not mark outlet %r", user.username, user.role, mn)
            return await page(request, "denied.html", user, 403, message="您的角色无权为此排放口提交标记")
        kind = form.get("kind", "")
        reason = form.get("reason", "").strip()[:1000]
        request_id = form.get("request_id", "")
        if not _REQUEST_ID.match(request_id):
            request_id = secrets.token_hex(8)
        try:
            payload = mark_form(kind, info, form, user, reason)
        except ValueError as e:
            request.session["flash"] = {"ok": False, "text": f"未提交：{e}"}
            return RedirectResponse("/marks", status_code=303)
        label = data.MARK_KIND_LABELS[kind]
        try:
            reply = await submit_mark(
                settings.mqtt,
                settings.registry.topics,
                payload,
                on_behalf=True,
                confirm_s=settings.confirm_s,
                request_id=request_id,
            )
        except (CemsError, OSError) as e:
            log.error("console: cannot send the %s of %s: %s", kind, mn, e)
            request.session["flash"] = {"ok": False, "text": f"无法连接消息服务器：{e}"}
            return RedirectResponse("/marks", status_code=303)
        log.info("console: %s of %s by %s: %s", kind, mn, user.username, reply and reply.get("result"))
        request.session["flash"] = mark_flash(label, reply)
        return RedirectResponse("/marks", status_code=303)

    def mark_form(kind: str, info: OutletInfo, form: dict[str, str], user: User, reason: str) -> dict[str, Any]:
        """The ``cems.mark/1`` message of a submitted form (``ValueError``: what is missing or wrong). The
        ingester decides the rest (deadline, caps) and answers."""
        if kind not in data.MARK_KIND_LABELS:
            raise ValueError("未知的提交类型")
        if kind != "withdrawal" and not reason:
            raise ValueError("请填写原因")
        mk: MarkKind = kind  # type: ignore[assignment]
        common: dict[str, Any] = {
            "mn": info.outlet.mn,
            "submitter": user.signature,
            "reason": reason,
            "attachment": form.get("attachment", "").strip()[:200],
            "client": "cems-console",
        }
        try:
            if kind in ("mark", "declaration"):
                code = form.get("type", "")
                types, decls = data.mark_types(catalog, info)
                if code not in {t.code for t in (types if kind == "mark" else decls)}:
                    raise ValueError("该排放口所属行业不能使用此类型")
                start, end = local_time(form.get("from", "")), local_time(form.get("to", ""))
                if end <= start:
                    raise ValueError("结束时间须晚于开始时间")
                return mark_payload(mk, type_=code, start=start, end=end, **common)
            if kind == "repair":
                pol = form.get("pollutant", "")
                if pol not in {c for c, _ in data.repair_pollutants(info, settings.clock())}:
                    raise ValueError("该排放口没有此因子的限值")
                value = float(form.get("value", ""))
                if not value >= 0 or value == float("inf"):
                    raise ValueError("修约值须为非负数")
                return mark_payload(mk, pollutant=pol, start=local_time(form.get("hour", "")), value=value, **common)
        except ValueError as e:
            if str(e).isascii():  # the parser's message (a time or number that does not parse)
                raise ValueError("时间或数值格式不正确") from e
            raise
        target = form.get("target", "").strip()
        if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", target):
            raise ValueError("请指定要撤回的记录")
        return mark_payload(mk, target=target, **common)

    def mark_flash(label: str, reply: dict[str, Any] | None) -> dict[str, Any]:
        if reply is None:
            return {"ok": False, "text": "接入服务未在规定时间内答复（已发送，请稍后刷新查看）"}
        result = str(reply.get("result"))
        rec = reply.get("record") or {}
        rid = rec.get("record_id", "") if isinstance(rec, dict) else ""
        words = data.MARK_RESULT_LABELS.get(result, result)
        if result in ("accepted", "duplicate"):
            return {"ok": True, "text": f"{label}{words}：记录 {rid}"}
        if result == "late":
            note = rec.get("note", "") if isinstance(rec, dict) else ""
            return {"ok": False, "text": f"{label}{words}（记录 {rid}）：{note}"}
        return {"ok": False, "text": f"{label}未被受理：{words}（{result}：{reply.get('detail')}）"}

    async def forbidden(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("forbidden", status_code=403)

    routes = [
        Route("/", queue),
        Route("/queue/rows", queue_rows),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/events/{event_id:str}", event_page, methods=["GET"]),
        Route("/events/{event_id:str}/action", event_action, methods=["POST"]),
        Route("/silent", silent),
        Route("/supervision", supervision),
        Route("/marks", marks_page, methods=["GET"]),
        Route("/marks", marks_submit, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie=SESSION_COOKIE,
            max_age=int(settings.session_hours * 3600),
            same_site="strict",
            https_only=settings.secure_cookies,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={CsrfError: forbidden})
