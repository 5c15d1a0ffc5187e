"""The directory family: users, groups and their membership, deleted items, /me, and the organization and its domains.

Users are the anchor of every other family (a mailbox, a drive and To Do lists belong to a user), so the other
families import :func:`~syncer.emulator.families.directory.users.find_user` from here.
"""

from __future__ import annotations

from syncer.emulator.families.directory import deleted, groups, organization, owners, users
from syncer.emulator.resources import Family

FAMILY = Family(
    name="directory",
    resource_types=(users.USER, groups.GROUP, organization.ORGANIZATION, organization.DOMAIN),
    blueprints=(users.bp, deleted.bp, groups.bp, owners.bp, organization.bp),
    subscribable=(users.SUBSCRIBABLE_USERS, groups.SUBSCRIBABLE_GROUPS),
    extra_roles=groups.GROUP_MEMBER_WRITE_ROLES,
)
