"""/admin/alerts: channels (email, webhook; on/off, recipients), thresholds, a test alert, open alerts, history."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import run, ui

from ehr_backup.web import WebContext

from .alert_settings import channel_controls, thresholds_form
from .deferred import Deferred
from .frame import PageSession, admin_page, guarded, local_time, tid
from .theme import notify


def register(ctx: WebContext) -> None:
    """Add /admin/alerts."""
    alerts = ctx.service.alerts

    @ui.page("/admin/alerts", title="Alerts · EHR Backup")
    async def alerts_page(request: Request) -> None:
        ps = admin_page(ctx, request, "Alerts")
        body = Deferred()  # built once the browser connects (pages/deferred.py)
        if not await body.connected():
            return
        state: dict[str, Any] = {"channels": [], "open": [], "history": [], "thresholds": {}}

        async def reload() -> None:
            state["channels"] = await run.io_bound(alerts.channels) or []
            state["open"] = await run.io_bound(alerts.open_alerts) or []
            state["history"] = await run.io_bound(alerts.history, 50) or []
            state["thresholds"] = await run.io_bound(ctx.service.alert_thresholds.view) or {}
            channel_list.refresh()
            open_list.refresh()
            history_list.refresh()
            thresholds.refresh()

        @ui.refreshable
        def channel_list() -> None:
            if not state["channels"]:
                tid(ui.label("No channels yet: alerts are noted below but sent nowhere."), "no-channels")
            for c in state["channels"]:
                with tid(ui.row().classes("items-center gap-3 w-full"), f"channel-{c['id']}"):
                    ui.label(c["kind"]).classes("font-bold w-20")
                    ui.label(c["target"]).classes("font-mono text-sm")
                    ui.label(f"password: {c['password']}" if c["kind"] == "email" else f"secret: {c['secret']}"
                             ).classes("text-sm")
                    ui.space()
                    channel_controls(ps, c, reload)

                    @guarded(ps, f"remove alert channel {c['id']}")
                    async def remove(channel_id: int = c["id"]) -> None:
                        await run.io_bound(alerts.remove, ps.actor, channel_id)
                        notify("Channel removed", type="positive")
                        await reload()

                    tid(ui.button("Remove", on_click=remove).props("flat dense color=negative"),
                        f"remove-channel-{c['id']}")

        @ui.refreshable
        def thresholds() -> None:
            t = state["thresholds"]
            if t:
                every = f"{ctx.service.settings.alert_check_minutes} min (EHR_BACKUP_ALERT_CHECK_MINUTES)"
                thresholds_form(ps, t, [("Check every", every), ("Link in messages", alerts.link())], reload)

        @ui.refreshable
        def open_list() -> None:
            if not state["open"]:
                tid(ui.label("No open alerts."), "no-open-alerts")
            for n, a in enumerate(state["open"]):
                with tid(ui.row().classes("items-start gap-3 w-full"), f"open-alert-{n}"):
                    ui.label(a["event"]).classes("font-bold text-negative w-36")
                    ui.label(a["message"]).classes("text-sm flex-1")
                    ui.label(f"since {local_time(a['since'])}").classes("text-sm")

        @ui.refreshable
        def history_list() -> None:
            rows = state["history"]
            if not rows:
                tid(ui.label("Nothing sent yet."), "no-history")
                return
            with tid(ui.grid(columns="auto auto auto auto 1fr").classes("w-full gap-x-3 gap-y-1 text-sm"), "history"):
                for title in ("Time", "Outcome", "Event", "Channel", "Message"):
                    ui.label(title).classes("font-bold")
                for h in rows:
                    ui.label(local_time(h["at"]))
                    tid(ui.label(h["outcome"]).classes("text-positive" if h["outcome"] == "sent" else "text-negative"),
                        f"history-outcome-{h['id']}")
                    ui.label(f"{h['event']} ({h['kind']})")
                    ui.label(h["channel"]).classes("font-mono")
                    ui.label(h["message"] + (f" — {h['error']}" if h["error"] else ""))

        with ui.column().classes("p-6 gap-6 w-full max-w-6xl mx-auto"):
            with ui.card().classes("w-full"):
                with ui.row().classes("items-center w-full"):
                    ui.label("Channels").classes("text-lg font-bold")
                    ui.space()

                    @guarded(ps, "send a test alert")
                    async def send_test() -> None:
                        result = await run.io_bound(alerts.test, ps.actor)
                        if result is not None:
                            failed = result["failed"]
                            notify(f"Test alert: {result['sent']} sent, {failed} failed",
                                      type="positive" if not failed else "warning")
                        await reload()

                    @guarded(ps, "check alerts now")
                    async def check_now() -> None:
                        await run.io_bound(alerts.check)
                        await reload()

                    tid(ui.button("Check now", on_click=check_now).props("flat"), "check-alerts")
                    tid(ui.button("Send test alert", on_click=send_test), "send-test-alert")
                channel_list()
                _add_forms(ps, reload)
            with ui.card().classes("w-full"):
                ui.label("When alerts fire").classes("text-lg font-bold")
                ui.label("A failed backup, verification, drill or scheduled run; a backup overdue for its schedule; "
                         "a location low on space or forecast to fill; an audit log that does not verify. A "
                         "'resolved' message follows when the condition clears.").classes("text-sm")
                thresholds()
            with ui.card().classes("w-full"):
                ui.label("Open alerts").classes("text-lg font-bold")
                open_list()
            with ui.card().classes("w-full"):
                ui.label("History").classes("text-lg font-bold")
                history_list()
        await reload()
        body.built()


def _add_forms(ps: PageSession, reload: Any) -> None:
    alerts = ps.ctx.service.alerts
    with ui.expansion("Add an email channel").classes("w-full"), ui.row().classes("items-end gap-3"):
        to = tid(ui.input("Recipients (comma-separated)").classes("w-72"), "email-recipients")
        host = tid(ui.input("SMTP host"), "email-host")
        port = tid(ui.number("Port", value=587, min=1, max=65535, format="%d").classes("w-24"), "email-port")
        security = tid(ui.select({"starttls": "STARTTLS", "tls": "TLS", "none": "none (local relay)"},
                                 value="starttls", label="Security"), "email-security")
        user = tid(ui.input("SMTP user (optional)"), "email-user")
        password = tid(ui.input("SMTP password", password=True), "email-password")
        sender = tid(ui.input("From (optional)"), "email-sender")

        @guarded(ps, "add an email alert channel")
        async def add_email() -> None:
            await run.io_bound(lambda: alerts.add_email(
                ps.actor, to.value or "", smtp_host=host.value or "", smtp_port=int(port.value or 587),
                smtp_user=user.value or None, security=security.value or "starttls",
                password=password.value or None, sender=sender.value or None))
            password.value = ""
            notify("Email channel added", type="positive")
            await reload()

        tid(ui.button("Add email", on_click=add_email), "add-email")
    with ui.expansion("Add a webhook").classes("w-full"), ui.row().classes("items-end gap-3"):
        url = tid(ui.input("URL").classes("w-96"), "webhook-url")
        secret = tid(ui.input("Signing secret (empty: make one)", password=True), "webhook-secret")

        @guarded(ps, "add a webhook alert channel")
        async def add_webhook() -> None:
            given = secret.value or None
            made = await run.io_bound(alerts.add_webhook, ps.actor, url.value or "", given)
            secret.value = ""
            if made is not None and given is None:
                with ui.dialog() as d, tid(ui.card(), "webhook-secret-dialog"):
                    ui.label("The receiver checks X-EHR-Backup-Signature with this secret. Copy it now: it "
                             "will not be shown again.")
                    tid(ui.input(value=made["secret"]).props("readonly").classes("w-[32rem] font-mono"),
                        "webhook-secret-value")
                    ui.button("Done", on_click=d.close)
                d.open()
            notify("Webhook added", type="positive")
            await reload()

        tid(ui.button("Add webhook", on_click=add_webhook), "add-webhook")
