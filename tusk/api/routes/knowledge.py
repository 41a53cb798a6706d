"""Dify's Knowledge API: datasets, documents, segments and retrieval. The same routes serve the
Service API (`/v1`, with a `dataset-` key) and the console (`/console/api`, with a login)."""

# No `from __future__ import annotations` here: FastAPI must see the per-router `CallerDep`
# aliases, which are local to `knowledge_router`, as objects rather than as names.
import json
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tusk.accounts.service import EDITING_ROLES, ConsoleUser
from tusk.api import serialize
from tusk.api.deps import ServicesDep, get_console_user, get_dataset_workspace
from tusk.api.routes.console_files import read_file, single_file
from tusk.errors import Forbidden, InvalidParam
from tusk.rag import datasets, documents, metadata, segments
from tusk.rag.preview import preview
from tusk.rag.retrieve import Retriever
from tusk.rag.settings import parse_retrieval
from tusk.services import Services

Page = Annotated[int, Query(ge=1, le=99999)]
Limit = Annotated[int, Query(ge=1, le=100)]


@dataclass(frozen=True)
class Caller:
    workspace_id: uuid.UUID
    account_id: uuid.UUID | None
    can_edit: bool

    def require_edit(self) -> None:
        if not self.can_edit:
            raise Forbidden("Your role in this workspace does not allow editing knowledge.")


async def dataset_key_caller(
    workspace_id: Annotated[uuid.UUID, Depends(get_dataset_workspace)],
) -> Caller:
    return Caller(workspace_id, None, True)


async def console_caller(user: Annotated[ConsoleUser, Depends(get_console_user)]) -> Caller:
    can_edit = user.role in EDITING_ROLES or user.role == "dataset_operator"
    return Caller(user.workspace_id, user.account.id, can_edit)


class DatasetBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    indexing_technique: str | None = None
    permission: str = "only_me"
    embedding_model: str | None = None
    embedding_model_provider: str | None = None
    retrieval_model: dict[str, Any] | None = None
    text_search_config: str = "simple"


class DatasetPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    description: str | None = None
    permission: str | None = None
    retrieval_model: dict[str, Any] | None = None
    text_search_config: str | None = None


class DocumentFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    process_rule: dict[str, Any] | None = None
    doc_form: str = "text_model"
    doc_language: str | None = "English"
    doc_metadata: dict[str, Any] | None = None


class TextDocument(DocumentFields):
    text: str | None = None


class StatusBody(BaseModel):
    document_ids: list[uuid.UUID]


class NewSegment(BaseModel):
    content: str
    answer: str | None = None
    keywords: list[str] | None = None


class NewSegments(BaseModel):
    segments: list[NewSegment] = Field(min_length=1, max_length=1000)


class SegmentChange(BaseModel):
    segment: dict[str, Any]


class MetadataField(BaseModel):
    name: str
    type: str = "string"


class MetadataRename(BaseModel):
    name: str


class DocumentMetadata(BaseModel):
    document_id: uuid.UUID
    metadata_list: list[dict[str, Any]]
    partial_update: bool = False


class MetadataOperations(BaseModel):
    operation_data: list[DocumentMetadata]


class RetrieveBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str
    retrieval_model: dict[str, Any] | None = None


def _model_name(body: DatasetBody) -> str | None:
    if not body.embedding_model:
        return None
    if body.embedding_model_provider:
        return f"{body.embedding_model_provider.rsplit('/', 1)[-1]}:{body.embedding_model}"
    return body.embedding_model


def _document_input(fields: DocumentFields, name: str) -> documents.DocumentInput:
    return documents.DocumentInput(
        name=name,
        process_rule=fields.process_rule,
        doc_form=fields.doc_form,
        doc_language=fields.doc_language,
        metadata=fields.doc_metadata,
    )


async def _file_and_fields(request: Request) -> tuple[Any, DocumentFields]:
    """A create/update-by-file request: the file, and the JSON fields in the form's `data`."""
    file = await single_file(request)
    raw = (await request.form()).get("data") or "{}"
    try:
        fields = DocumentFields.model_validate(json.loads(str(raw)))
    except (ValueError, TypeError) as error:
        raise InvalidParam(
            f"data is not valid JSON of the document's fields: {error}", params="data"
        ) from None
    return file, fields


def knowledge_router(
    prefix: str, caller_dependency: Callable[..., Coroutine[Any, Any, Caller]]
) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["knowledge"])
    CallerDep = Annotated[Caller, Depends(caller_dependency)]

    @router.get("/datasets")
    async def list_datasets(
        caller: CallerDep,
        services: ServicesDep,
        page: Page = 1,
        limit: Limit = 20,
        keyword: str | None = None,
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            found, counts = await datasets.list_datasets(
                db, caller.workspace_id, page=page, limit=limit, keyword=keyword
            )
        return found.as_json([serialize.dataset(d, counts.get(d.id)) for d in found.items])

    @router.post("/datasets")
    async def create_dataset(
        body: DatasetBody, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        caller.require_edit()
        new = datasets.DatasetInput(
            name=body.name,
            description=body.description,
            indexing_technique=body.indexing_technique,
            permission=body.permission,
            embedding_model=_model_name(body),
            retrieval_model=body.retrieval_model,
            text_search_config=body.text_search_config,
        )
        async with services.transaction() as db:
            row = await datasets.create_dataset(
                db, services.models, services.queue, caller.workspace_id, new, caller.account_id
            )
        return serialize.dataset(row)

    @router.get("/datasets/{dataset_id}")
    async def get_dataset(
        dataset_id: uuid.UUID, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            row = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            stats = (await datasets.stats(db, [row.id])).get(row.id)
        return serialize.dataset(row, stats)

    @router.patch("/datasets/{dataset_id}")
    async def update_dataset(
        dataset_id: uuid.UUID, body: DatasetPatch, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        caller.require_edit()
        changes = datasets.Changes(**body.model_dump())
        async with services.transaction() as db:
            row = await datasets.update_dataset(db, caller.workspace_id, dataset_id, changes)
        return serialize.dataset(row)

    @router.delete("/datasets/{dataset_id}", status_code=204)
    async def delete_dataset(
        dataset_id: uuid.UUID, caller: CallerDep, services: ServicesDep
    ) -> Response:
        caller.require_edit()
        async with services.transaction() as db:
            await datasets.delete_dataset(db, caller.workspace_id, dataset_id)
        return Response(status_code=204)

    async def _create(
        services: Services,
        caller: Caller,
        dataset_id: uuid.UUID,
        new: documents.DocumentInput,
        source: documents.Source,
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            row = await documents.add_document(
                db,
                services.storage,
                services.queue,
                dataset,
                new,
                source,
                max_bytes=services.settings.upload_limit_bytes,
                created_by=caller.account_id,
            )
        return {"document": serialize.document(row), "batch": row.batch}

    @router.post("/datasets/{dataset_id}/document/create-by-text")
    @router.post("/datasets/{dataset_id}/document/create_by_text", include_in_schema=False)
    async def create_by_text(
        dataset_id: uuid.UUID, body: TextDocument, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        if not body.name or body.text is None:
            raise InvalidParam("name and text are required", params="text" if body.name else "name")
        source = documents.text_source(body.name, body.text)
        return await _create(services, caller, dataset_id, _document_input(body, body.name), source)

    @router.post("/datasets/{dataset_id}/document/create-by-file")
    @router.post("/datasets/{dataset_id}/document/create_by_file", include_in_schema=False)
    async def create_by_file(
        dataset_id: uuid.UUID, request: Request, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        file, fields = await _file_and_fields(request)
        name = fields.name or file.filename or "document"
        source = documents.Source(file.filename or name, file.content_type, read_file(file))
        return await _create(services, caller, dataset_id, _document_input(fields, name), source)

    async def _update(
        services: Services,
        caller: Caller,
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        fields: DocumentFields,
        source: documents.Source | None,
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            row = await documents.get_document(db, dataset, document_id, for_update=True)
            changes = _document_input(fields, fields.name or row.name)
            row = await documents.replace_source(
                db,
                services.storage,
                services.queue,
                row,
                dataset,
                changes,
                source,
                max_bytes=services.settings.upload_limit_bytes,
                by=caller.account_id,
            )
        return {"document": serialize.document(row), "batch": row.batch}

    @router.post("/datasets/{dataset_id}/documents/{document_id}/update-by-text")
    @router.post(
        "/datasets/{dataset_id}/documents/{document_id}/update_by_text", include_in_schema=False
    )
    async def update_by_text(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        body: TextDocument,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        source = (
            None if body.text is None else documents.text_source(body.name or "document", body.text)
        )
        return await _update(services, caller, dataset_id, document_id, body, source)

    @router.post("/datasets/{dataset_id}/documents/{document_id}/update-by-file")
    @router.post(
        "/datasets/{dataset_id}/documents/{document_id}/update_by_file", include_in_schema=False
    )
    async def update_by_file(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        request: Request,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        file, fields = await _file_and_fields(request)
        source = documents.Source(file.filename or "document", file.content_type, read_file(file))
        return await _update(services, caller, dataset_id, document_id, fields, source)

    @router.get("/datasets/{dataset_id}/documents")
    async def list_documents(
        dataset_id: uuid.UUID,
        caller: CallerDep,
        services: ServicesDep,
        page: Page = 1,
        limit: Limit = 20,
        keyword: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            found = await documents.list_documents(
                db, dataset, page=page, limit=limit, keyword=keyword, status=status
            )
        return found.as_json([serialize.document(d) for d in found.items])

    @router.get("/datasets/{dataset_id}/documents/{batch}/indexing-status")
    async def indexing_status(
        dataset_id: uuid.UUID, batch: str, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            rows = await documents.batch_documents(db, dataset, batch)
        return {"data": [serialize.indexing_status(d) for d in rows]}

    @router.patch("/datasets/{dataset_id}/documents/status/{action}")
    async def document_status(
        dataset_id: uuid.UUID,
        action: str,
        body: StatusBody,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            await documents.set_enabled(db, dataset, body.document_ids, action)
        return {"result": "success"}

    @router.get("/datasets/{dataset_id}/documents/{document_id}")
    async def get_document(
        dataset_id: uuid.UUID, document_id: uuid.UUID, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            row = await documents.get_document(db, dataset, document_id)
        return serialize.document(row)

    @router.delete("/datasets/{dataset_id}/documents/{document_id}", status_code=204)
    async def delete_document(
        dataset_id: uuid.UUID, document_id: uuid.UUID, caller: CallerDep, services: ServicesDep
    ) -> Response:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            await documents.delete_document(db, services.storage, dataset, document_id)
        return Response(status_code=204)

    @router.patch("/datasets/{dataset_id}/documents/{document_id}/processing/{action}")
    async def processing(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        action: str,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        """Dify's pause and resume of a document being indexed."""
        caller.require_edit()
        if action not in ("pause", "resume"):
            raise InvalidParam("action must be pause or resume", params="action")
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            if action == "pause":
                await documents.pause(db, dataset, document_id)
            else:
                await documents.resume(db, services.queue, dataset, document_id)
        return {"result": "success"}

    @router.get("/datasets/{dataset_id}/documents/{document_id}/segments")
    async def list_segments(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        caller: CallerDep,
        services: ServicesDep,
        page: Page = 1,
        limit: Limit = 20,
        keyword: str | None = None,
        status: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            document = await documents.get_document(db, dataset, document_id)
            found = await segments.list_segments(
                db, document, page=page, limit=limit, keyword=keyword, statuses=status or ()
            )
            children = await segments.children_of(db, [s.id for s in found.items])
        items = [serialize.segment(s, children.get(s.id)) for s in found.items]
        return {**found.as_json(items), "doc_form": document.doc_form}

    @router.post("/datasets/{dataset_id}/documents/{document_id}/segments")
    async def add_segments(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        body: NewSegments,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        caller.require_edit()
        new = [segments.SegmentInput(s.content, s.answer, s.keywords) for s in body.segments]
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            document = await documents.get_document(db, dataset, document_id)
            rows = await segments.add_segments(
                db, services.models, dataset, document, new, caller.account_id
            )
        return {"data": [serialize.segment(s) for s in rows], "doc_form": document.doc_form}

    @router.get("/datasets/{dataset_id}/documents/{document_id}/segments/{segment_id}")
    async def get_segment(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        segment_id: uuid.UUID,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            document = await documents.get_document(db, dataset, document_id)
            row = await segments.get_segment(db, document, segment_id)
            children = await segments.children_of(db, [row.id])
        return {"data": serialize.segment(row, children.get(row.id)), "doc_form": document.doc_form}

    @router.post("/datasets/{dataset_id}/documents/{document_id}/segments/{segment_id}")
    async def update_segment(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        segment_id: uuid.UUID,
        body: SegmentChange,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            document = await documents.get_document(db, dataset, document_id)
            row = await segments.update_segment(
                db, services.models, dataset, document, segment_id, body.segment
            )
        return {"data": serialize.segment(row), "doc_form": document.doc_form}

    @router.delete(
        "/datasets/{dataset_id}/documents/{document_id}/segments/{segment_id}", status_code=204
    )
    async def delete_segment(
        dataset_id: uuid.UUID,
        document_id: uuid.UUID,
        segment_id: uuid.UUID,
        caller: CallerDep,
        services: ServicesDep,
    ) -> Response:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            document = await documents.get_document(db, dataset, document_id)
            await segments.delete_segment(db, document, segment_id)
        return Response(status_code=204)

    @router.get("/datasets/{dataset_id}/metadata")
    async def list_metadata(
        dataset_id: uuid.UUID, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            fields = await metadata.field_counts(db, dataset)
        return {"doc_metadata": fields, "built_in_field_enabled": False}

    @router.post("/datasets/{dataset_id}/metadata", status_code=201)
    async def add_metadata(
        dataset_id: uuid.UUID, body: MetadataField, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            return dict(await metadata.add_field(db, dataset, body.name, body.type))

    @router.patch("/datasets/{dataset_id}/metadata/{field_id}")
    async def rename_metadata(
        dataset_id: uuid.UUID,
        field_id: str,
        body: MetadataRename,
        caller: CallerDep,
        services: ServicesDep,
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            return dict(await metadata.rename_field(db, dataset, field_id, body.name))

    @router.delete("/datasets/{dataset_id}/metadata/{field_id}", status_code=204)
    async def delete_metadata(
        dataset_id: uuid.UUID, field_id: str, caller: CallerDep, services: ServicesDep
    ) -> Response:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            await metadata.delete_field(db, dataset, field_id)
        return Response(status_code=204)

    @router.post("/datasets/{dataset_id}/documents/metadata")
    async def document_metadata(
        dataset_id: uuid.UUID, body: MetadataOperations, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        caller.require_edit()
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            for operation in body.operation_data:
                values = metadata.document_values(dataset, operation.metadata_list)
                await metadata.set_document_values(
                    db, dataset, operation.document_id, values, partial=operation.partial_update
                )
        return {"result": "success"}

    @router.post("/datasets/{dataset_id}/retrieve")
    @router.post("/datasets/{dataset_id}/hit-testing")
    async def retrieve(
        dataset_id: uuid.UUID, body: RetrieveBody, caller: CallerDep, services: ServicesDep
    ) -> dict[str, Any]:
        async with services.transaction() as db:
            dataset = await datasets.get_dataset(db, caller.workspace_id, dataset_id)
            settings = datasets.retrieval_of(dataset)
            if body.retrieval_model:
                settings = parse_retrieval(
                    body.retrieval_model, default_method=settings.search_method
                )
            found = await Retriever(db, services.models, caller.workspace_id).search(
                [dataset], body.query, settings
            )
        return {"query": {"content": body.query}, "records": [serialize.record(r) for r in found]}

    return router


service_router = knowledge_router("/v1", dataset_key_caller)
console_router = knowledge_router("/console/api", console_caller)


class EstimateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    info_list: dict[str, Any] | None = None
    text: str | None = None
    process_rule: dict[str, Any] | None = None
    doc_form: str = "text_model"


def _file_ids(info_list: dict[str, Any] | None) -> list[uuid.UUID]:
    ids = ((info_list or {}).get("file_info_list") or {}).get("file_ids") or []
    try:
        return [uuid.UUID(str(i)) for i in ids]
    except ValueError:
        raise InvalidParam("file_ids must be UUIDs", params="info_list") from None


estimate_router = APIRouter(prefix="/console/api/datasets", tags=["knowledge"])


@estimate_router.post("/indexing-estimate")
async def indexing_estimate(
    body: EstimateBody, caller: Annotated[Caller, Depends(console_caller)], services: ServicesDep
) -> dict[str, Any]:
    """Dify's preview: the first chunks of uploaded files (or of a text), and how many there are."""
    async with services.transaction() as db:
        found = await preview(
            db,
            services.storage,
            caller.workspace_id,
            file_ids=_file_ids(body.info_list),
            text=body.text,
            process_rule=body.process_rule,
        )
    chunks = [
        {"content": c.text, "child_chunks": [child.text for child in c.children]}
        for c in found.first
    ]
    return {"total_segments": found.total, "preview": chunks, "qa_preview": None}
