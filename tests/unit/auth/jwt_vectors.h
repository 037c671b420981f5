/* jwt_vectors.h - fixed RS256 test vectors made once by node's crypto (key 2048 bits, kid test-kid); claims iat
 * 1700000000, nbf 1699999990, exp 1700003600, sub "42", aud gitlab-code-suggestions unless the name says otherwise. */
static const char JWKS[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"ltgU2146qpFtV_kD-EjCy07hOv68czIKUaUZ9IIpV0CTBCOOYfzvWeufAhukK3X"
    "f_BsMmM4kMgme5ZWpGt5HqsZI8amtXNswQGFbrsMDBrZqlVtRTduY58TCE7DV4TFSEC_HYtoVrGAItzy1zc1Jw_mj6"
    "tKbrv9A4NmBErS-xsve8UW82R2pKJT8TkW-HWvVzU9hKH4Bpusw3tWR8RQ3Nh82cIl-FSIH-GnkDbnn-EPVfNdJW0t"
    "tKBufALdwOq2EWCfapRvalobOJ6GpXxly0pb14n1kx4DFSE-evVGVlogdKHtp01Z9D18IxUU2LP_en-p90WZlld7p0"
    "-X2_0g9Mw\",\"e\":\"AQAB\",\"kid\":\"test-kid\",\"use\":\"sig\",\"alg\":\"RS256\"}]}";
static const char VALID[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3Qta2lkIn0.eyJzdWIiOiI0MiIsImF1ZCI6ImdpdG"
    "xhYi1jb2RlLXN1Z2dlc3Rpb25zIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE2OTk5OTk5OTAsImV4cCI6MTcwMDAw"
    "MzYwMH0.kXtkyLfKcELpntPHFbUys_gVKIXEu1X15u9emg6cEglQRV3NHyLqaNjIxhZ0F_xpUGAqwpdATbowiTBwv-"
    "W8Gyx_Yvk3qEIEBShwhp_74_9IUCALOq4KOAy6xfRyTQ0OSyrIvR3HrUDR_lY_9BxhYSMXD6v2wY8Yjr1CVUqGdWSC"
    "kGlwl3v0BrjacPMpBtyeZwnhbJN4eSZMBhtVVA2JFVvoZ5bN5voQUE3_6MA0DyjsCQK8qxB78dcF9Nnc2XPEQuTKfu"
    "wHfV8d0M81yPpdzt-myQiz2mBTiuadZJnLy22RzEQiS0uQWReYJKTzH-SmAWKegv3twgra7e27RlyRYA";
static const char AUD_ARRAY[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3Qta2lkIn0.eyJzdWIiOiI0MiIsImF1ZCI6WyJ4Ii"
    "wiZ2l0bGFiLWNvZGUtc3VnZ2VzdGlvbnMiXSwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE2OTk5OTk5OTAsImV4cCI6"
    "MTcwMDAwMzYwMH0.lQ2FdUPYMC8JA9psBgN0vlfpkPN4IKTFKT3t0817SV6DRgCKUv8Hn-GZG_1iezDKlnmpG01q2Z"
    "n-pFUgYhj2eMVj-fy6qskEnLeg2r-ihgmXGzoru-JsPnB3ItyWKMmnncNgGkBIOS9W1jPwUviXiu9Tof-2i-L09KyW"
    "dw1HCVRaDwVEXyB9e7vSDkBoreil3jRpPKYK0BMclW0mAWfqgTw72Ccrr9g6VOpFeTkWZHj_9jFCqj_2XCYjBfLyWc"
    "V3Oj0hEGojC-OFxIAo2T_iHoWKUecsWrCL-N-2tcSRixS8ITCHi4XCwK4HpnojFQIWxtPiUjqULDb2ZZRW3TtPTg";
static const char WRONG_AUD[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3Qta2lkIn0.eyJzdWIiOiI0MiIsImF1ZCI6IngiLC"
    "JpYXQiOjE3MDAwMDAwMDAsIm5iZiI6MTY5OTk5OTk5MCwiZXhwIjoxNzAwMDAzNjAwfQ.dQN9BGTQ-JPcL59GTZ16b"
    "5QeDu61K88KwQfukhlYocxSq9glt1p2dA4slWOsts9_v7j2M0Fg_MDF1ZAgMqPh7nNRzBwlt_4Pm1ivR7L-SzJmMNK"
    "zisyz1PH5sQlnmMsmFkUO93DWMEWk15aCrqKb4xabqeCfFDSHZFZfCdvzHUb3XWABTYk6NYmNKaBt3pHBZBKgx5Oiq"
    "SxPi6qghToLdeAACiCdk92XDr3XJ1T6rp3cTUJUkLOTG6T3n4fG1WW1hI6VU-hiuayM4QQOmzdZxZ8FB-eHzK97iKP"
    "cwp0J-lZRruxPipLSN7h2SvghIWK5y4vgd7z5dxwcJQRZqcFDlg";
static const char WRONG_KEY[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3Qta2lkIn0.eyJzdWIiOiI0MiIsImF1ZCI6ImdpdG"
    "xhYi1jb2RlLXN1Z2dlc3Rpb25zIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE2OTk5OTk5OTAsImV4cCI6MTcwMDAw"
    "MzYwMH0.qhH-vz7kM3df8sg7qISCtfF9wjgjx3-tVNY9QV9hc_qSz_A6Qrdy9g97cjv-MfrOlWAOczSPu0CNRiDews"
    "pK3lmUN1mAuHKl4jEPybrQVWruC82iyvJTLd1WhIeZ4aPc2d70CJnTURV0A5OdDs1NyKU4lWV2E88q4TSaeUPbry_U"
    "o02RRjZwCmX8QwVeDodJbpHWi73bgOcTvA9UH9vjmFbjHkwEguKOiLe0CCtD1vFqIZCi1ySb1qlr6tDbqtzJqj_PQo"
    "XxB9o8X_1jPYTSKPM9aApoi1jVhs7m3hzQy8SFRksBABRalH7MS8a5tSisOLaHMgwXS8lCmU33slNunQ";
static const char UNKNOWN_KID[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im90aGVyIn0.eyJzdWIiOiI0MiIsImF1ZCI6ImdpdGxhYi"
    "1jb2RlLXN1Z2dlc3Rpb25zIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE2OTk5OTk5OTAsImV4cCI6MTcwMDAwMzYw"
    "MH0.abwCz38kfRrW51BgrHcJPcUj3OeV2c4Pjb3mvJ8c2mApnFZHOqSWc7O6LaJwJLVmyqxUYGxrwHDIjTlcEBIInZ"
    "lvduBLwZLQayXGR2h1iCXulDSkEHpdzpYDHJUMrXCwDAT69cSBx1iyZPRKoZ7K6QTnupf2P1eFsK0WY6uHAZu6eUV8"
    "LXSvHtuyZiV6RpNGOl5iFA8jaEGr57zZQ9Av145HrYR-g2fQ53L8Nz0Pve3kKynlIaw5NEuVvTlVyLMMReUTAdE-ex"
    "0-yEQL0C5RlLAkEBtHf7oAInZNexLilqFnm2R2ylsCkWSHWc1g63YsUaGndVvAkKCmZ2tphzZVvg";
static const char NO_EXP[] =
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3Qta2lkIn0.eyJzdWIiOiI0MiIsImF1ZCI6ImdpdG"
    "xhYi1jb2RlLXN1Z2dlc3Rpb25zIn0.UyVs_G3c5WRTcFeEsAtBd7gd4cedm-tAgrNITWTkTrto3ucIdSxIA062w8E8"
    "rSG66HhYfbIr9TPVTlTK8bBO_Mw2LxUFniasm8Hh2bBFuLYWBQhsdprocB8ZPczgktDwv9UTBLHUh5DPqMe4saNGG6"
    "ghbSQPKXIJC3ozxiCRtRtVFj7Dfr_8kOFBSXDS7L5I9-uMHD-DxwArTanmBr3gxI759r0uk06kNHWaMkpoNOyAqGon"
    "e_cguQhQu34Ooa0d391R18d00BQ-A6GiQ-WszRsIcjhkgkxWapnqL5PkO3wHrhZmVp4CuyzoGa6AnGIs_GGamYW92U"
    "P2oS4J58J-mw";
static const char NONE[] =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsImF1ZCI6ImdpdGxhYi1jb2RlLXN1Z2dlc3Rpb2"
    "5zIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE2OTk5OTk5OTAsImV4cCI6MTcwMDAwMzYwMH0.";
