{
 "manifest": {
  "created": "2026-11-26T06:39:51+00:00",
  "key_id": "d75738e657a882c4",
  "name": "marathi",
  "sha256": "ff448940262b0fe6d1bbbcf0ae71ba39281491d85a2963ed809cc5daa2a9b161",
  "size": 724302,
  "version": "0.1.0"
 },
 "signature": "31WuZckSlJgUqfVUX6KbQuh9/YX3xbqYZ1u0H0afOiQaNGWiJIozu3Br34jVGsFcQ3sKX5qBKPL5mGPWpfQ4BA=="
}
