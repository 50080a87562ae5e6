"""The Python client (a reconstructed copy of the state, kept live) and the terminal viewer."""

from dashboard_server.client.connection import ClientClosed, ClientState, DashboardClient

__all__ = ["ClientClosed", "ClientState", "DashboardClient"]
