"""syncer: keep a SQL database in step with Microsoft Graph."""

__version__ = "0.1.0"
