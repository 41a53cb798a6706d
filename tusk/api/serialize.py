"""Rows to the JSON shapes of Dify's APIs (timestamps as Unix seconds)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tusk.db.models import (
    ApiKey,
    App,
    Dataset,
    Document,
    DocumentSegment,
    UploadFile,
    Workflow,
    WorkflowNodeExecution,
    WorkflowRun,
)
from tusk.rag.datasets import DatasetStats, retrieval_of
from tusk.rag.documents import display_status
from tusk.rag.retrieve import Record, segment_json
from tusk.workflow.store import content_hash


def ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def api_key(key: ApiKey, token: str | None = None) -> dict[str, Any]:
    """`token` is the whole key right after creation; afterwards only its hint is known."""
    return {
        "id": str(key.id),
        "type": key.type,
        "token": token or key.key_hint,
        "last_used_at": ts(key.last_used_at),
        "created_at": ts(key.created_at),
    }


def app(row: App) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "mode": row.mode,
        "icon_type": row.icon_type,
        "icon": row.icon,
        "icon_background": row.icon_background,
        "enable_site": row.enable_site,
        "enable_api": row.enable_api,
        "use_icon_as_answer_icon": row.use_icon_as_answer_icon,
        "max_active_requests": row.max_active_requests,
        "finish_in_background": row.finish_in_background,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


def upload_file(row: UploadFile) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "size": row.size,
        "extension": row.extension,
        "mime_type": row.mime_type,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "preview_url": None,
        "source_url": row.source_url,
        "tenant_id": str(row.workspace_id),
    }


def dataset(row: Dataset, stats: DatasetStats | None = None) -> dict[str, Any]:
    stats = stats or DatasetStats()
    retrieval = retrieval_of(row).as_dify()
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "provider": row.provider,
        "permission": row.permission,
        "data_source_type": row.data_source_type or "upload_file",
        "indexing_technique": row.indexing_technique,
        "app_count": 0,
        "document_count": stats.document_count,
        "word_count": stats.word_count,
        "total_documents": stats.document_count,
        "total_available_documents": stats.available_documents,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "updated_by": str(row.updated_by) if row.updated_by else None,
        "updated_at": ts(row.updated_at),
        "embedding_model": row.embedding_model,
        "embedding_model_provider": row.embedding_model_provider,
        "embedding_available": row.indexing_technique == "economy" or bool(row.embedding_model),
        "retrieval_model_dict": retrieval,
        "text_search_config": row.text_search_config,
        "tags": [],
        "doc_form": row.doc_form,
        "external_knowledge_info": None,
        "external_retrieval_model": None,
        "doc_metadata": list(row.metadata_fields or []),
        "built_in_field_enabled": False,
        "enable_api": True,
    }


def document(row: Document) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "position": row.position,
        "data_source_type": row.data_source_type,
        "data_source_info": row.data_source_info,
        "dataset_process_rule_id": None,
        "process_rule": row.process_rule,
        "name": row.name,
        "created_from": row.created_from,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "tokens": row.tokens,
        "indexing_status": row.indexing_status,
        "error": row.error,
        "enabled": row.enabled,
        "disabled_at": ts(row.disabled_at),
        "disabled_by": None,
        "archived": row.archived,
        "display_status": display_status(row),
        "word_count": row.word_count,
        "hit_count": 0,
        "doc_form": row.doc_form,
        "doc_language": row.doc_language,
        "doc_metadata": [{"name": k, "value": v} for k, v in (row.doc_metadata or {}).items()],
        "completed_segments": row.completed_segments,
        "total_segments": row.total_segments,
    }


def indexing_status(row: Document) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "indexing_status": row.indexing_status,
        "processing_started_at": ts(row.processing_started_at),
        "parsing_completed_at": ts(row.parsing_completed_at),
        "cleaning_completed_at": ts(row.cleaning_completed_at),
        "splitting_completed_at": ts(row.splitting_completed_at),
        "completed_at": ts(row.completed_at),
        "paused_at": ts(row.paused_at),
        "error": row.error,
        "stopped_at": ts(row.stopped_at),
        "completed_segments": row.completed_segments,
        "total_segments": row.total_segments,
    }


def segment(row: DocumentSegment, children: list[DocumentSegment] | None = None) -> dict[str, Any]:
    data = segment_json(row)
    data["child_chunks"] = [
        {
            "id": str(c.id),
            "segment_id": str(row.id),
            "content": c.content,
            "position": c.position,
            "word_count": c.word_count,
            "created_at": ts(c.created_at),
        }
        for c in children or []
    ]
    return data


def record(item: Record) -> dict[str, Any]:
    segment_data = {
        **item.segment,
        "document": {
            "id": str(item.document_id),
            "data_source_type": "upload_file",
            "name": item.document_name,
        },
    }
    return {
        "segment": segment_data,
        "child_chunks": item.child_chunks,
        "score": item.score,
        "tsne_position": None,
        "files": [],
        "summary": None,
    }


def workflow(row: Workflow, environment: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "graph": row.graph,
        "features": row.features,
        "hash": content_hash(row.graph, row.features),
        "version": row.version,
        "marked_name": row.marked_name,
        "marked_comment": row.marked_comment,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "updated_by": str(row.updated_by) if row.updated_by else None,
        "updated_at": ts(row.updated_at),
        "tool_published": False,
        "environment_variables": environment,
        "conversation_variables": row.conversation_variables,
    }


def workflow_run(row: WorkflowRun) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "workflow_id": str(row.workflow_id),
        "version": row.version,
        "status": row.status,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "error": row.error,
        "elapsed_time": row.elapsed_time,
        "total_tokens": row.total_tokens,
        "total_steps": row.total_steps,
        "exceptions_count": row.exceptions_count,
        "created_by_role": row.created_by_role,
        "created_at": ts(row.created_at),
        "finished_at": ts(row.finished_at),
    }


def node_execution(row: WorkflowNodeExecution) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "index": row.index,
        "predecessor_node_id": row.predecessor_node_id,
        "node_id": row.node_id,
        "node_type": row.node_type,
        "title": row.title,
        "inputs": row.inputs,
        "process_data": row.process_data,
        "outputs": row.outputs,
        "status": row.status,
        "error": row.error,
        "elapsed_time": row.elapsed_time,
        "execution_metadata": row.execution_metadata,
        "extras": {},
        "created_by_role": row.created_by_role,
        "created_at": ts(row.created_at),
        "finished_at": ts(row.finished_at),
    }
