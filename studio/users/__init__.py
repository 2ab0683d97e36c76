"""Users, roles, personal API tokens, the sign-in rate limit and the audit log (issue 19).

With no users in the database the studio behaves as before: one user (open on loopback, or the one
``STUDIO_API_KEY``). Once a user exists, every surface asks for a user: a password at ``/login`` (a signed session
cookie) or a personal API token (``Authorization: Bearer wst_...``).
"""

from studio.users.roles import ROLES, Permission, allows
from studio.users.service import UserService

__all__ = ["ROLES", "Permission", "UserService", "allows"]
