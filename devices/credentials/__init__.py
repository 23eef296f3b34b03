"""Per-device MQTT credentials and the broker's password and ACL files.

Every device connects with its own identity: username = device id, password = a secret
generated once and shown once (:func:`devices.registry.register_device`, :func:`rotate`).
The database keeps only Mosquitto's ``$7$`` hash of it, so the broker itself checks the
secret: :func:`write_broker_files` renders Mosquitto's ``password_file`` and ``acl_file`` from
the registry and can signal the broker to reload them (SIGHUP).

The renderers are pure (:func:`render_password_file`, :func:`render_acl`); reading the
registry, writing the files and signalling the broker are the thin shell around them.

ACL design (see ``deploy/mosquitto/anxin.acl.example``):

* a device may write ``{prefix}/dev/{its id}/telemetry|event|status`` and read
  ``{prefix}/dev/{its id}/cmd``; nothing else;
* a gateway (any device that others name as their gateway) has the same, plus read on the
  ``cmd`` topics of its bound children, so it can relay commands. It gets **no** write on the
  children's telemetry/event/status topics: the protocol has a hub publish on its own topics
  with ``"dev"`` naming the child, and ingest keeps such a reading only when the child is bound
  to that hub (else ``device_mismatch``). Granting the children's topics would open a second
  path that the binding check does not see;
* the ingest service reads ``{prefix}/dev/+/telemetry|event|status`` and writes
  ``{prefix}/dev/+/cmd`` (commands to devices);
* an optional monitor account reads ``{prefix}/#`` and ``$SYS/#``.

Two listeners, two pairs of files (``deploy/mosquitto/anxin.conf``, ``per_listener_settings
true``): the device listener replaces every client id by the username
(``use_username_as_clientid``) and knows only the devices; the service listener knows only the
service accounts, whose clients keep the client ids they choose (the ingester's persistent
session). So no device can connect as a service, nor take a service's session by its client
id; and a device named like a service account or a service client id is refused here.

A revoked or retired device, or one without a secret, has no line in the password file and
so cannot connect at all; a connected one is dropped when the broker reloads.

Modules: :mod:`~devices.credentials.accounts` (the pure core),
:mod:`~devices.credentials.store` (the registry), :mod:`~devices.credentials.broker` (files
and reload) and :mod:`~devices.credentials.cli`; every public name is re-exported here.
"""

from __future__ import annotations

from devices.credentials.accounts import (
    SERVICE_ITERATIONS,
    BrokerFiles,
    CredentialsError,
    DeviceAccount,
    ServiceAccount,
    ServiceRole,
    check_names,
    render_acl,
    render_password_file,
    render_service_acl,
    render_service_password_file,
    select_accounts,
)
from devices.credentials.broker import (
    BrokerPaths,
    reload_broker,
    write_broker_files,
)
from devices.credentials.cli import (
    main_broker_auth,
    main_credentials,
)
from devices.credentials.store import (
    load_device_accounts,
    revoke,
    rotate,
)

__all__ = [
    "SERVICE_ITERATIONS",
    "BrokerFiles",
    "BrokerPaths",
    "CredentialsError",
    "DeviceAccount",
    "ServiceAccount",
    "ServiceRole",
    "check_names",
    "load_device_accounts",
    "main_broker_auth",
    "main_credentials",
    "reload_broker",
    "render_acl",
    "render_password_file",
    "render_service_acl",
    "render_service_password_file",
    "revoke",
    "rotate",
    "select_accounts",
    "write_broker_files",
]
