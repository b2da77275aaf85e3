from awsiot import iotidentity


def test_create_and_register(fleet_emulator, claim, connect):
    ident = claim.identity()
    keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    assert len(keys.certificate_id) == 64
    reg = ident.register_thing(iotidentity.RegisterThingRequest(
        template_name="methane-fleet", certificate_ownership_token=keys.certificate_ownership_token,
        parameters={"SerialNumber": "A1", "SiteId": "s1"})).result(20)
    assert reg.thing_name == "methane-A1"
    dev = connect(None, None, client_id="methane-A1", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result()
