"""files_client: the Python client of Files.

    from files_client import Client
    c = Client("http://127.0.0.1:8080", api_key=KEY)   # Client() reads FILES_URL, FILES_API_KEY
    f = c.create_folder("scans", description="CT")
    sub = f.create_subfolder("day1")
    files = sub.upload(["a.png", "b.png"])             # list of File
    hits = c.search("a.png")                            # Files and Folders, each with .path
    ds = c.create_dataset("train", synced_folder=f)

`AsyncClient` has the same methods, awaited.
"""

from files_client._core import Retries
from files_client.api import Dataset, File, Folder, ImageGroup, Integration, Job
from files_client.client import AsyncClient, Client
from files_client.errors import (
    Conflict,
    FilesError,
    Forbidden,
    Invalid,
    NotFound,
    RangeNotSatisfiable,
    ServerError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedContent,
    UploadRefused,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Dataset",
    "File",
    "FilesError",
    "Folder",
    "Forbidden",
    "ImageGroup",
    "Integration",
    "Invalid",
    "Job",
    "NotFound",
    "RangeNotSatisfiable",
    "Retries",
    "ServerError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedContent",
    "UploadRefused",
]
