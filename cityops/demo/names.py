"""Seeded generators of plausible Chinese village and person names and phone numbers."""

from __future__ import annotations

import random

PLACE_CHARS = (
    "平安河坝岭桥湾溪山林凤龙石竹柏花新民和兴丰福红光明云水田庙坪垭岩堡寨塘院口梁湖峰泉"
    "松柳桃李杨梅茶桑金银玉宝华荣盛春秋东南西北中高长双三五七九太康乐康宁清顺德仁义礼信"
)
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚"
)
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国文红春梅海燕志军德福永贵成林"
MOBILE_PREFIXES = ("133", "135", "137", "138", "139", "158", "177", "180", "189", "199")


def place_name(rng: random.Random, suffix: str, taken: set[str]) -> str:
    for _ in range(1000):
        name = rng.choice(PLACE_CHARS) + rng.choice(PLACE_CHARS) + suffix
        if name[0] != name[1] and name not in taken:
            taken.add(name)
            return name
    raise RuntimeError("ran out of place names")


def person_name(rng: random.Random) -> str:
    given = rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.7 else "")
    return rng.choice(SURNAMES) + given


def mobile(rng: random.Random) -> str:
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
