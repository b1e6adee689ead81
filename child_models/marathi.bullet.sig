{
 "manifest": {
  "created": "2026-11-26T05:33:11+00:00",
  "key_id": "d75738e657a882c4",
  "name": "marathi",
  "sha256": "676b9382d159f34d7679dcdbd5a52d9ffec89e75af2518f08046a4dc429e031d",
  "size": 724302,
  "version": "0.1.0"
 },
 "signature": "DZoAEm3V3heZZIU5xCSpCWU0OdpYSe0DwqmQpPRlX0N73l7NIlBbuSiBw0UAfYNJgO3WOOknxekDoDyOqPsDAQ=="
}
