DROP TABLE cuesched.handover;
DROP TABLE cuesched.cluster;
DROP TABLE cuesched.instance;
