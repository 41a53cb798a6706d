"""What a client reads about an app before talking to it: Dify's `/parameters` (the input form
and the features, with their defaults), `/site`, and the end users the app has seen."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.config import Settings
from tusk.db.models import App, AppModelConfig, EndUser
from tusk.errors import TuskError
from tusk.workflow import store
from tusk.workflow.store import WorkflowNotPublished

WORKFLOW_MODES = ("workflow", "advanced-chat")
DISABLED = {"enabled": False}
DEFAULT_FILE_UPLOAD = {
    "image": {
        "enabled": False,
        "number_limits": 3,
        "detail": "high",
        "transfer_methods": ["remote_url", "local_file"],
    }
}
# Dify's defaults for the limits Tusk has no separate setting for, in MB (files: a count)
IMAGE_LIMIT_MB, VIDEO_LIMIT_MB, AUDIO_LIMIT_MB, WORKFLOW_FILES = 10, 100, 50, 10


class AppUnavailable(TuskError):
    code, status = "app_unavailable", 400


class EndUserNotFound(TuskError):
    code, status = "end_user_not_found", 404


def old_input_form(graph: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Start node's variables in Dify's old structure: `[{"<type>": variable}, ...]`."""
    for node in graph.get("nodes") or []:
        data = node.get("data") if isinstance(node, Mapping) else None
        if isinstance(data, Mapping) and data.get("type") == "start":
            variables = data.get("variables") or []
            return [{str(v.get("type")): dict(v)} for v in variables if isinstance(v, Mapping)]
    return []


def parameters(
    features: Mapping[str, Any], user_input_form: list[Any], settings: Settings
) -> dict[str, Any]:
    """Dify's parameters body: each feature as configured, or its default when absent."""
    return {
        "opening_statement": features.get("opening_statement"),
        "suggested_questions": features.get("suggested_questions", []),
        "suggested_questions_after_answer": features.get(
            "suggested_questions_after_answer", DISABLED
        ),
        "speech_to_text": features.get("speech_to_text", DISABLED),
        "text_to_speech": features.get("text_to_speech", DISABLED),
        "retriever_resource": features.get("retriever_resource", DISABLED),
        "annotation_reply": features.get("annotation_reply", DISABLED),
        "more_like_this": features.get("more_like_this", DISABLED),
        "user_input_form": user_input_form,
        "sensitive_word_avoidance": features.get(
            "sensitive_word_avoidance", {"enabled": False, "type": "", "configs": []}
        ),
        "file_upload": features.get("file_upload", DEFAULT_FILE_UPLOAD),
        "system_parameters": {
            "image_file_size_limit": IMAGE_LIMIT_MB,
            "video_file_size_limit": VIDEO_LIMIT_MB,
            "audio_file_size_limit": AUDIO_LIMIT_MB,
            "file_size_limit": settings.upload_file_size_limit_mb,
            "workflow_file_upload_limit": WORKFLOW_FILES,
        },
    }


async def app_parameters(db: AsyncSession, app: App, settings: Settings) -> dict[str, Any]:
    """From the published workflow for workflow modes, else from the app's model config."""
    unavailable = AppUnavailable("App unavailable, please check your app configurations.")
    if app.mode in WORKFLOW_MODES:
        try:
            workflow = await store.get_published(db, app)
        except WorkflowNotPublished:
            raise unavailable from None
        return parameters(workflow.features or {}, old_input_form(workflow.graph or {}), settings)
    config = await model_config_of(db, app)
    if config is None:
        raise unavailable
    document = config.config or {}
    return parameters(document, list(document.get("user_input_form") or []), settings)


async def model_config_of(db: AsyncSession, app: App) -> AppModelConfig | None:
    if app.app_model_config_id is None:
        return None
    query = select(AppModelConfig).where(
        AppModelConfig.id == app.app_model_config_id,
        AppModelConfig.app_id == app.id,
        AppModelConfig.workspace_id == app.workspace_id,
    )
    return (await db.execute(query)).scalar_one_or_none()


def site(app: App) -> dict[str, Any]:
    """Dify's web-app site settings; Tusk keeps no separate site row, so they come from the app."""
    return {
        "title": app.name,
        "chat_color_theme": None,
        "chat_color_theme_inverted": False,
        "icon_type": app.icon_type,
        "icon": app.icon,
        "icon_background": app.icon_background,
        "icon_url": None,
        "description": app.description,
        "copyright": None,
        "privacy_policy": None,
        "custom_disclaimer": "",
        "default_language": "en-US",
        "show_workflow_steps": True,
        "use_icon_as_answer_icon": app.use_icon_as_answer_icon,
    }


async def find_end_user(db: AsyncSession, app: App, end_user_id: Any) -> EndUser:
    """An end user of this app; one of another app or workspace is not found."""
    missing = EndUserNotFound("End user not found.")
    try:
        wanted = uuid.UUID(str(end_user_id))
    except ValueError:
        raise missing from None
    query = select(EndUser).where(
        EndUser.id == wanted, EndUser.app_id == app.id, EndUser.workspace_id == app.workspace_id
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise missing
    return found
