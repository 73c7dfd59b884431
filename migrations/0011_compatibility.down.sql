DROP TABLE cuesched.migration;
