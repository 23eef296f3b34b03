"""Storage of the registry over psycopg: residents, consents, emergency profiles, care circles,
doctor teams, hospitals, communities, devices and their bindings, caller lookup, key rotation.

Every function takes an open ``psycopg.Connection`` and runs inside ``conn.transaction()`` (a
savepoint when the caller already holds a transaction, so several calls can commit together).
Inputs are validated models from :mod:`devices.model`; outputs are frozen models. Functions
that read or write encrypted fields take the :class:`devices.crypto.Keyring`.

Errors: :class:`NotFoundError` (no such row), :class:`ConflictError` (bad lifecycle move,
duplicate, retired target), :class:`ExtensionError` and :class:`PhoneError` (bad input), all
:class:`devices.registry.RegistryError`. Access control and audit are the API's: these functions
do not know who asks, except the ``by`` recorded with profile versions and bindings.

This package re-exports the public API of its modules, one concern each:

- ``_sql``: shared private helpers (``Conn``, ``Row``, ``MAX_PAGE``, queries, update, retire);
- ``residents``: residents, their status and search;
- ``consents``: consents and the scopes in force;
- ``extensions``: the emergency profile's extension fields;
- ``profiles``: versioned emergency profiles and their verification;
- ``channels``: contacts' and team members' channels (``channel_opener``);
- ``contacts``: the care circle;
- ``teams``: family doctor teams and their members;
- ``contracts``: residents' contracts with doctor teams;
- ``places``: hospitals and communities;
- ``bindings``: device bindings and their history (``Binding``);
- ``devices``: devices, binding them, their lifecycle;
- ``lookup``: caller-number lookup;
- ``keys``: key rotation (``ENCRYPTED_COLUMNS``).

Imports run one way, every module on ``_sql``, and: ``bindings`` <- ``residents``, ``devices``;
``residents`` <- ``consents``, ``profiles``, ``contacts``, ``contracts``, ``devices``, ``lookup``;
``channels`` <- ``contacts``, ``teams``; ``extensions`` <- ``profiles``; ``contacts`` <- ``lookup``.
"""

from devices.repository._sql import MAX_PAGE, Conn, Row
from devices.repository.bindings import Binding, binding_history
from devices.repository.channels import channel_opener
from devices.repository.consents import (
    consented_scopes,
    list_consents,
    record_consent,
    withdraw_consent,
)
from devices.repository.contacts import (
    add_contact,
    get_contact,
    list_contacts,
    retire_contact,
    update_contact,
)
from devices.repository.contracts import (
    active_contract,
    end_contract,
    list_contracts,
    sign_contract,
)
from devices.repository.devices import (
    activate_device,
    bind_device,
    create_device,
    get_device,
    list_devices,
    retire_device,
    set_device_state,
)
from devices.repository.extensions import list_extension_fields, register_extension_field
from devices.repository.keys import ENCRYPTED_COLUMNS, rotate_keys
from devices.repository.lookup import lookup_caller
from devices.repository.places import (
    create_community,
    create_hospital,
    get_community,
    get_hospital,
    list_communities,
    list_hospitals,
    retire_community,
    retire_hospital,
    update_community,
    update_hospital,
)
from devices.repository.profiles import (
    get_profile,
    profile_history,
    put_profile,
    unverified_profiles,
    verify_profile,
)
from devices.repository.residents import (
    create_resident,
    get_resident,
    list_residents,
    retire_resident,
    set_resident_status,
    update_resident,
)
from devices.repository.teams import (
    add_team_member,
    create_team,
    get_team,
    list_teams,
    retire_team,
    retire_team_member,
)

__all__ = [
    "ENCRYPTED_COLUMNS",
    "MAX_PAGE",
    "Binding",
    "Conn",
    "Row",
    "activate_device",
    "active_contract",
    "add_contact",
    "add_team_member",
    "bind_device",
    "binding_history",
    "channel_opener",
    "consented_scopes",
    "create_community",
    "create_device",
    "create_hospital",
    "create_resident",
    "create_team",
    "end_contract",
    "get_community",
    "get_contact",
    "get_device",
    "get_hospital",
    "get_profile",
    "get_resident",
    "get_team",
    "list_communities",
    "list_consents",
    "list_contacts",
    "list_contracts",
    "list_devices",
    "list_extension_fields",
    "list_hospitals",
    "list_residents",
    "list_teams",
    "lookup_caller",
    "profile_history",
    "put_profile",
    "record_consent",
    "register_extension_field",
    "retire_community",
    "retire_contact",
    "retire_device",
    "retire_hospital",
    "retire_resident",
    "retire_team",
    "retire_team_member",
    "rotate_keys",
    "set_device_state",
    "set_resident_status",
    "sign_contract",
    "unverified_profiles",
    "update_community",
    "update_contact",
    "update_hospital",
    "update_resident",
    "verify_profile",
    "withdraw_consent",
]
