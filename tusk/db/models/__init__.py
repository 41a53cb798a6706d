"""The models of every table Tusk owns; the job queue's tables belong to procrastinate."""

from tusk.db.models import agent as agent  # registers the agent tables with Base
from tusk.db.models import annotations as annotations  # registers the annotation tables
from tusk.db.models import message_files as message_files  # registers message_files
from tusk.db.models import tools as tools  # registers the tool tables with Base
from tusk.db.models.accounts import ROLES, Account, ApiKey, Membership, Setup, Workspace
from tusk.db.models.apps import App, AppModelConfig, Conversation, EndUser, Message
from tusk.db.models.base import Base
from tusk.db.models.feedback import MessageFeedback
from tusk.db.models.files import StorageChunk, StorageObject, UploadFile
from tusk.db.models.infra import DefaultModel, KeyValue, ModelUsage, ProviderCredential
from tusk.db.models.knowledge import Dataset, Document, DocumentSegment
from tusk.db.models.workflows import Workflow, WorkflowNodeExecution, WorkflowRun

__all__ = [
    "ROLES",
    "Account",
    "ApiKey",
    "App",
    "AppModelConfig",
    "Base",
    "Conversation",
    "Dataset",
    "DefaultModel",
    "Document",
    "DocumentSegment",
    "EndUser",
    "KeyValue",
    "Membership",
    "Message",
    "MessageFeedback",
    "ModelUsage",
    "ProviderCredential",
    "Setup",
    "StorageChunk",
    "StorageObject",
    "UploadFile",
    "Workflow",
    "WorkflowNodeExecution",
    "WorkflowRun",
    "Workspace",
]
